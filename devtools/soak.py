"""The soak: thousands of presses mixed with web requests and voice reloads, against the
real daemon (`kiosk run` as a subprocess over the sample box, capture sink).

    python -m devtools.soak --presses 10000 --json out/soak.json

Three threads run at once for the whole soak: mock-pin presses (through the
daemon's development control socket, so they take the gpiozero -> router ->
player path of a real button), a web client (health, voices, state, metrics,
plays, free text, stops) and a reloader (SIGHUP every few seconds).  Then:

- no crash: the daemon still answers and exits 0 on SIGTERM;
- no lost playback: every press the router accepted became an utterance that
  finished (`done` or `interrupted` by the next press), none ended in `error`;
- no garbled playback: every captured file of a cached item is that item's
  samples exactly, up to the point an interrupt faded it out (and the fade only
  attenuates);
- resident memory of the daemon grows less than 5 % from after the warm-up to
  the end.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from devtools.daemon_process import VOICE, Box, Daemon, build_box, expected_capture

SOAK_BUTTONS = f"""
[[button]]
name = "welcome"
source = "gpio"
pin = 17
voice = "{VOICE}"
phrase = "welcome"
cooldown_ms = 0

[[button]]
name = "song"
source = "gpio"
pin = 27
voice = "{VOICE}"
archival = "interview"
cooldown_ms = 0
"""
#: No debounce for the mock pins (a real button keeps [gpio] bounce_ms): presses come
#: faster than a visitor's, and each one takes the whole gpiozero -> router path.
SOAK_CONFIG = "[gpio]\nbounce_ms = 0\n"
PINS = {17: ("synthetic", "welcome"), 27: ("archival", "interview")}
TEXTS = ("你好", "欢迎来到博物馆", "我们一起听吧")
_FILE = re.compile(r"(\d{6})-(.+)\.wav")


@dataclass
class SoakResult:
    """What one soak did and found (the README's figures)."""

    presses: int = 0
    web_requests: int = 0
    web_errors: list[str] = field(default_factory=list)
    reloads: int = 0
    seconds: float = 0.0
    accepted: int = 0
    plays: dict[str, int] = field(default_factory=dict)
    captured_files: int = 0
    checked_files: int = 0
    garbled: list[str] = field(default_factory=list)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_growth_pct: float = 0.0
    rss_trace_mb: list[float] = field(default_factory=list)
    """Resident memory every few seconds during the soak."""
    press_p50_ms: float | None = None
    press_p99_ms: float | None = None
    exit_code: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for PID {pid}")


def _metric(text: str, name: str) -> dict[str, float]:
    """Samples of one metric family from Prometheus text: {labels: value}."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            out[key[len(name) :]] = float(value)
    return out


def check_capture(daemon: Daemon, result: SoakResult) -> None:
    """Every captured cached item is its samples exactly, up to an interrupt's fade."""
    wants = {}
    for kind, item in PINS.values():
        from appliance.phrase_cache import PhraseCache

        cache = PhraseCache(48000, 64 << 20)
        cache.add_version(VOICE, 1, daemon.state / "voices" / VOICE / "1" / "phrases")
        wants[f"{VOICE}-{item}"] = expected_capture(cache.samples(VOICE, kind, item))
    fade = round(48000 * 8 / 1000)
    files = sorted(daemon.capture.glob("*.wav"))
    result.captured_files = len(files)
    for path in files:
        match = _FILE.fullmatch(path.name)
        got, _rate = soundfile.read(str(path), dtype="float32")
        if not np.isfinite(got).all() or np.abs(got).max(initial=0) > 1.0:
            result.garbled.append(f"{path.name}: not finite or above full scale")
            continue
        want = wants.get(match.group(2)) if match else None
        if want is None:
            continue  # free text: not known in advance
        result.checked_files += 1
        nz = np.flatnonzero(got)
        n = int(nz[-1]) + 1 if nz.size else 0
        n = min(n, want.size)
        exact = max(0, n - fade)
        if not np.array_equal(got[:exact], want[:exact]):
            first = int(np.flatnonzero(got[:exact] != want[:exact])[0])
            result.garbled.append(f"{path.name}: differs from the cached item at sample {first}")
        elif np.any(np.abs(got[exact:n]) > np.abs(want[exact:n]) + 1e-6):
            result.garbled.append(f"{path.name}: louder than the item where it was faded out")


def soak(
    daemon: Daemon,
    presses: int,
    *,
    press_gap: float = 0.004,
    reload_every: float = 8.0,
    seed: int = 0,
    warmup: int = 100,
) -> SoakResult:
    """Run the soak against a started daemon (with `SOAK_BUTTONS`); it is left running."""
    assert daemon.proc is not None
    rng = random.Random(seed)
    result = SoakResult()
    _mix(daemon, rng, warmup, press_gap, reload_every, SoakResult())  # first-use allocations
    time.sleep(1.0)
    result.rss_start_mb = rss_mb(daemon.proc.pid)
    before = daemon.get("/health")["inputs"]["counts"]["actions"]
    plays_before = plays(daemon)
    start = time.monotonic()
    _mix(daemon, rng, presses, press_gap, reload_every, result)
    result.seconds = round(time.monotonic() - start, 1)
    return _verify(daemon, result, int(before), plays_before)


def _mix(
    daemon: Daemon,
    rng: random.Random,
    presses: int,
    press_gap: float,
    reload_every: float,
    result: SoakResult,
) -> None:
    """Presses in this thread, web requests and reloads in two others, until the presses
    are done."""
    stop = threading.Event()

    def web() -> None:
        while not stop.is_set():
            choice = rng.random()
            try:
                if choice < 0.3:
                    daemon.get("/health")
                elif choice < 0.45:
                    daemon.get("/api/voices")
                elif choice < 0.55:
                    daemon.get("/api/state")
                elif choice < 0.6:
                    daemon.get("/metrics")
                elif choice < 0.85:
                    status, _ = daemon.post("/api/play", {"voice": VOICE, "phrase": "welcome"})
                    assert status == 202, status
                elif choice < 0.95:
                    status, body = daemon.post(
                        "/api/say", {"voice": VOICE, "text": rng.choice(TEXTS)}
                    )
                    assert status in (202, 409), (status, body)  # 409: the text queue is full
                else:
                    assert daemon.post("/api/stop")[0] == 200
            except Exception as exc:  # noted, not fatal: the soak counts them
                result.web_errors.append(f"{type(exc).__name__}: {exc}"[:300])
            result.web_requests += 1
            stop.wait(0.02)

    def reloads() -> None:
        last = time.monotonic()
        while not stop.wait(1.0):
            if time.monotonic() - last >= reload_every:
                daemon.signal(signal.SIGHUP)
                result.reloads += 1
                last = time.monotonic()
            assert daemon.proc is not None
            result.rss_trace_mb.append(round(rss_mb(daemon.proc.pid), 1))

    threads = [
        threading.Thread(target=web, daemon=True),
        threading.Thread(target=reloads, daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        for _ in range(presses):
            daemon.press_gpio(rng.choice(list(PINS)), hold=0.002)
            result.presses += 1
            time.sleep(press_gap * rng.random())
    finally:
        stop.set()
        for t in threads:
            t.join(30)


def plays(daemon: Daemon) -> dict[str, int]:
    """The daemon's play counter by "source:outcome" (from /metrics)."""
    _status, text = daemon.request("GET", "/metrics")
    out: dict[str, int] = {}
    for labels, value in _metric(str(text), "kiosk_plays_total").items():
        outcome = re.search(r'outcome="(\w+)"', labels)
        source = re.search(r'source="(\w+)"', labels)
        key = f"{source.group(1) if source else '?'}:{outcome.group(1) if outcome else '?'}"
        out[key] = out.get(key, 0) + int(value)
    return out


def _verify(
    daemon: Daemon, result: SoakResult, actions_before: int, plays_before: dict[str, int]
) -> SoakResult:
    assert daemon.proc is not None
    time.sleep(3.0)  # what plays finishes
    daemon.post("/api/stop")
    time.sleep(1.0)
    result.rss_end_mb = rss_mb(daemon.proc.pid)
    result.rss_growth_pct = round(100 * (result.rss_end_mb / result.rss_start_mb - 1), 2)
    health = daemon.get("/health")
    counts = health["inputs"]["counts"]
    result.accepted = int(counts["actions"]) - actions_before
    after = plays(daemon)
    result.plays = {k: v - plays_before.get(k, 0) for k, v in after.items()}
    result.plays = {k: v for k, v in result.plays.items() if v}
    latency = health.get("latency", {})
    result.press_p50_ms, result.press_p99_ms = (
        latency.get("press_p50_ms"),
        latency.get("press_p99_ms"),
    )
    # The router's accepted actions are the pins' presses and the screen's taps; each
    # must have become a play that ended (the last may still be playing).
    routed = sum(v for k, v in result.plays.items() if k.split(":")[0] in ("gpio", "web"))
    if routed < result.accepted - 1:
        result.problems.append(f"lost: {result.accepted} presses accepted, {routed} played")
    if any(k.endswith(":error") for k in result.plays):
        result.problems.append(f"plays ending in error: {result.plays}")
    check_capture(daemon, result)
    if result.garbled:
        result.problems.append(f"{len(result.garbled)} garbled file(s): {result.garbled[:3]}")
    if result.rss_growth_pct >= 5.0:
        result.problems.append(f"resident memory grew {result.rss_growth_pct} %")
    if len(result.web_errors) > 0:
        result.problems.append(f"{len(result.web_errors)} web error(s): {result.web_errors[:3]}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--presses", type=int, default=10_000)
    parser.add_argument("--reload-every", type=float, default=8.0, help="seconds between SIGHUPs")
    parser.add_argument("--box", metavar="DIR", help="a sample box built before (else a new one)")
    parser.add_argument("--json", metavar="FILE", help="write the result as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kiosk-soak-") as tmp:
        root = Path(args.box) if args.box else Path(tmp) / "box"
        box = Box.load(root) if (root / Box.RECORD).exists() else build_box(root)
        daemon = Daemon(
            box, Path(tmp) / "daemon", buttons=SOAK_BUTTONS, extra_config=SOAK_CONFIG
        ).start()
        try:
            result = soak(daemon, args.presses, reload_every=args.reload_every)
        finally:
            code = daemon.stop()
        result.exit_code = code
        if code != 0:
            result.problems.append(f"the daemon exited with {code}")
    print(json.dumps({**asdict(result), "ok": result.ok}, indent=2, ensure_ascii=False))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**asdict(result), "ok": result.ok}, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
