"""The real daemon as a subprocess, for end-to-end tests (the daemon's, the touch UI's).

    from daemon_harness import kiosk_box, kiosk_daemon   # pytest fixtures

    def test_something(kiosk_daemon):
        kiosk_daemon.get("/health")["status"]            # JSON over real HTTP
        kiosk_daemon.post("/api/play", {"voice": "chen-ama", "phrase": "welcome"})
        kiosk_daemon.captured(1)                         # the capture sink's WAVs

`build_box(root)` makes, once per session, a state folder provisioned for
real (`devtools.sample_packs`): the tiny voice `chen-ama` with a free text
policy, a base pack with the tiny BERT, and its cached phrases; plus a second
signed pack (`li-ye`, curated) that is not installed, for reload tests.
`Daemon` copies that state folder, writes a config (capture sink, a free
port, the given buttons), starts `kiosk run --config FILE` with a real unix
datagram socket as $NOTIFY_SOCKET, and waits for READY=1.  `stop()` sends
SIGTERM and checks the exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.sample_packs import (
    HEALTH_TOKENS,
    SampleKeys,
    build_pack,
    make_keys,
    provision_box,
    write_kit,
)

REPO = Path(__file__).resolve().parents[1]
VOICE = "chen-ama"
SECOND_VOICE = "li-ye"
#: Seconds the daemon may take from start to READY=1 on a busy 2-core machine.
READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Box:
    """A provisioned state folder to copy, and what made it."""

    root: Path
    state: Path
    config_dir: Path
    keys: SampleKeys
    second_pack: Path
    """A signed curated pack of another voice, not installed."""


def build_box(root: str | Path) -> Box:
    """A state folder with `chen-ama` (free text) and the tiny BERT base pack, for real."""
    from provisioning.packing import make_base_pack
    from provisioning.signing import load_private_key, sign_bytes

    root = Path(root)
    kit = write_kit(root / "kit")
    keys = make_keys(root / "keys")
    voice = build_pack(kit, keys, root / "packs", text_policy="free")
    base = make_base_pack(
        kit.pretrained / "chinese-roberta-wwm-ext-large",
        "bert-base",
        1,
        root / "packs",
        progress=lambda line: None,
    )
    data = (base / "manifest.json").read_bytes()
    (base / "manifest.json.sig").write_bytes(sign_bytes(load_private_key(keys.key), data))
    box = provision_box([voice, base], root / "box", keys)
    precache_state(box.state)
    second = build_pack(kit, keys, root / "second", voice_id=SECOND_VOICE)
    return Box(root, box.state, box.config_dir, keys, second)


def precache_state(state_root: Path) -> None:
    """The cached phrases of every active version that has none yet, a few tokens long
    (the untrained tiny voice would otherwise babble to its cap): the build step's own
    precache, as provisioning runs it."""
    from kiosk_build.precache import precache
    from kiosk_build.provenance import BoxSigner

    from engines.voice import Voice
    from provisioning.precache_jobs import precache_jobs
    from provisioning.provision import box_helpers
    from provisioning.state import State

    state = State(state_root)
    for voice_id in state.ids("voice"):
        active = state.active(voice_id)
        if active is None or (active.folder / "phrases" / "index.json").exists():
            continue
        jobs = precache_jobs(
            active.pack,
            active.manifest,
            active.manifest_sha256,
            active.voice_folder,
            max_new_tokens=HEALTH_TOKENS,
        )
        precache(
            lambda a=active: Voice.load(
                a.voice_folder, helpers=box_helpers(state), backend="torch-eager"
            ),
            jobs,
            active.folder / "phrases",
            signer=BoxSigner.ensure(state.root / "provenance"),
            progress=False,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NotifyListener:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    def lines(self, since: float = 0.0) -> list[str]:
        """Every `KEY=value` line received after `since` (time.monotonic)."""
        with self._lock:
            return [line for t, m in self.messages if t >= since for line in m.splitlines()]

    def wait_for(self, prefix: str, timeout: float, since: float = 0.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines(since):
                if line.startswith(prefix):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no {prefix!r} within {timeout} s; got {self.lines(since)}")

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=1)


class Daemon:
    """One `kiosk run` subprocess over a copy of a `Box`'s state folder."""

    def __init__(
        self,
        box: Box,
        work: Path,
        *,
        buttons: str = "",
        extra_config: str = "",
        env: dict[str, str] | None = None,
        watchdog_seconds: float | None = 4.0,
    ) -> None:
        self.box = box
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.state = self.work / "state"
        if not self.state.exists():
            shutil.copytree(box.state, self.state, symlinks=True)
        self.capture = self.work / "capture"
        self.port = free_port()
        self.config_path = self.work / "kiosk.toml"
        self.buttons = buttons
        self.extra_config = extra_config
        self.write_config()
        self.env = dict(env or {})
        self.watchdog_seconds = watchdog_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: NotifyListener | None = None
        self.log_path = self.work / "kioskd.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, buttons: str | None = None, extra: str | None = None) -> None:
        if buttons is not None:
            self.buttons = buttons
        if extra is not None:
            self.extra_config = extra
        self.config_path.write_text(
            f'state_dir = "{self.state}"\n\n'
            f'[web]\nport = {self.port}\npin = "2468"\n\n'
            f'[audio]\noutput = "capture:{self.capture}"\nsample_rate = 48000\n\n'
            '[backend]\nname = "torch-eager"\n\n'
            f"{self.extra_config}\n{self.buttons}\n",
            encoding="utf-8",
        )

    def start(self, wait: bool = True) -> Daemon:
        sock = self.work / "notify.sock"
        sock.unlink(missing_ok=True)
        self.notify = NotifyListener(sock)
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(sock),
            "GPIOZERO_PIN_FACTORY": "mock",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        env.pop("KIOSK_CONFIG", None)
        if self.watchdog_seconds:
            env["WATCHDOG_USEC"] = str(int(self.watchdog_seconds * 1e6))
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "run", "--config", str(self.config_path)],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        assert self.notify is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line == "READY=1" for line in self.notify.lines()):
                return self.notify.wait_for("STATUS=", 1.0)
            if self.proc.poll() is not None:
                raise AssertionError(f"kiosk run exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.1)
        raise AssertionError(f"no READY=1 within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-6000:]
        except OSError:
            return ""

    # --- HTTP -------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 10.0
    ) -> tuple[int, Any]:
        """(status, parsed JSON or text) of one request; 4xx/5xx are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                status, raw, kind = response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            status, raw, kind = exc.code, exc.read(), exc.headers
        text = raw.decode("utf-8", "replace")
        if "json" in (kind.get("Content-Type") or ""):
            return status, json.loads(text) if text else None
        return status, text

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (status, body)
        return body

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return self.request("POST", path, {} if body is None else body)

    # --- audio --------------------------------------------------------------------

    def captured(self, count: int, timeout: float = 20.0) -> list[Path]:
        """The capture sink's first `count` WAV files (waits for them)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = sorted(self.capture.glob("*.wav")) if self.capture.is_dir() else []
            if len(files) >= count:
                return files
            time.sleep(0.05)
        raise AssertionError(
            f"{count} capture file(s) expected within {timeout} s; found "
            f"{sorted(self.capture.glob('*.wav'))}\n{self.log()}"
        )

    # --- signals ------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM; returns the exit status (kills it after `timeout`)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        if self.notify is not None:
            self.notify.close()
        self._log.close()
        return code

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if check():
                    return
            time.sleep(0.1)
        raise AssertionError(f"{what} not within {timeout} s\n{self.log()}")


@pytest.fixture(scope="session")
def kiosk_box(tmp_path_factory: pytest.TempPathFactory) -> Box:
    """The provisioned state folder, built once per test session (about 40 s)."""
    return build_box(tmp_path_factory.mktemp("kiosk-box"))


@pytest.fixture
def kiosk_daemon(kiosk_box: Box, tmp_path: Path) -> Iterator[Daemon]:
    """A running daemon (READY) on a copy of the box's state; stopped after the test."""
    daemon = Daemon(kiosk_box, tmp_path / "daemon").start()
    try:
        yield daemon
    finally:
        daemon.stop()
