# Heritage Voice Kiosk: set-up, tests and demos.
# `make test` and `make demo` work on a fresh machine: they create .venv/ on
# first use (reused afterwards) and install everything the project needs.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# alsa-utils: the ALSA null device; libportaudio2: sounddevice; espeak-ng: the demo's
# archival stand-ins; chromium + fonts-noto-cjk: the touch UI (and its tests);
# libsndfile1: FLAC/WAV files; sox: measuring audio by hand.
APT_PACKAGES := alsa-utils libportaudio2 libsndfile1 espeak-ng sox chromium fonts-noto-cjk

.PHONY: all venv apt test lint compat demo bench bench-memory install clean

all: test

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: apt $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

compat: venv
	$(VENV)/bin/kiosk compat-check tests/golden

# The demo box: demo voices packed, signed and provisioned from a stand-in stick into
# out/demo/, then `kiosk run` in the foreground (UI on http://127.0.0.1:8080; Ctrl-C
# stops it). `kiosk demo --out DIR` still synthesises the demo sentences into WAVs.
demo: venv
	$(PY) -m appliance.demo_box --out out/demo

bench: venv
	$(VENV)/bin/kiosk bench --json out/bench.json

# `kiosk say` from a prepared voice folder as a subprocess: process start -> first audio
# (target < 3 s), onnxruntime and torch-eager, 5 runs each; builds the demo voice and a
# full-size random BERT (1.3 GB) beside out/bench-voice the first time.
.PHONY: bench-boot
bench-boot: venv
	$(VENV)/bin/kiosk bench --boot --json out/bench-boot.json

# The daemon: press -> first sample over 1000 presses while free text is synthesised
# (`kiosk run` over the sample box, about 3 minutes), and the soak (10 000 presses).
.PHONY: bench-daemon soak
bench-daemon: venv
	$(VENV)/bin/kiosk bench --daemon --json out/bench-daemon.json

soak: venv
	$(PY) -m devtools.soak --presses 10000 --json out/soak.json

# Resident memory per backend for one and three voices loaded at once.
bench-memory: venv
	$(PY) -m devtools.memory_bench --json out/memory.json

# Engines for this device and the cached phrases of every installed voice (idempotent).
.PHONY: engines
engines: venv
	$(VENV)/bin/kiosk build --all

# The kiosk on a real box (sudo make install) or staged (make install DESTDIR=...):
# a venv in $(PREFIX)/venv, the units, users, folders and rules; systemd/README.md.
PREFIX ?= /opt/kiosk
install:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" PYTHON="$(PYTHON)" sh systemd/install.sh

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache *.egg-info
