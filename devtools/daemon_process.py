"""`kiosk run` as a subprocess over a provisioned sample box: tests, the soak, the bench.

    box = build_box(folder)                     # once: about a minute
    daemon = Daemon(box, work, buttons=TOML).start()   # waits for READY=1
    daemon.get("/health")["status"]             # JSON over real HTTP
    daemon.post("/api/play", {"voice": "chen-ama", "phrase": "welcome"})
    daemon.press_gpio(17)                       # a mock pin inside the daemon
    daemon.captured(1)                          # the capture sink's WAVs
    daemon.stop()

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from devtools.sample_packs import (
    HEALTH_TOKENS,
    SampleKeys,
    box_config_dir,
    build_pack,
    make_keys,
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

    RECORD = "box.json"

    def save(self) -> None:
        """Note the paths in `root/box.json`, so a later run can reuse the box."""
        record = {
            "state": str(self.state),
            "config_dir": str(self.config_dir),
            "key": str(self.keys.key),
            "pub": str(self.keys.pub),
            "trust": str(self.keys.trust),
            "second_pack": str(self.second_pack),
        }
        (self.root / self.RECORD).write_text(json.dumps(record), encoding="utf-8")

    @classmethod
    def load(cls, root: Path) -> Box:
        r = json.loads((root / cls.RECORD).read_text(encoding="utf-8"))
        keys = SampleKeys(Path(r["key"]), Path(r["pub"]), Path(r["trust"]))
        return cls(root, Path(r["state"]), Path(r["config_dir"]), keys, Path(r["second_pack"]))


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
    state = provision(root / "box", keys, [voice, base])
    second = build_pack(kit, keys, root / "second", voice_id=SECOND_VOICE)
    box = Box(root, state, root / "box" / "config", keys, second)
    box.save()
    return box


def provision(root: Path, keys: SampleKeys, packs: list[Path]) -> Path:
    """`devtools.sample_packs.provision_box`, with the cached phrases a few tokens long (the
    untrained tiny voice would otherwise babble to its cap): a real Provisioner run."""
    from provisioning.provision import Provisioner, box_trust, write_reports
    from provisioning.state import State

    stick = root / "stick"
    stick.mkdir(parents=True, exist_ok=True)
    for pack in packs:
        shutil.copytree(pack, stick / pack.name, dirs_exist_ok=True)
    state = State(root / "state")
    provisioner = Provisioner(
        state,
        box_trust(box_config_dir(root / "config", keys)),
        backend="torch-eager",
        health_tokens=HEALTH_TOKENS,
        precache_tokens=HEALTH_TOKENS,
        progress=lambda line: None,
    )
    items = provisioner.run(stick)
    write_reports(state, items)
    refused = [item.line() for item in items if item.status == "refused"]
    if refused:
        raise ValueError("sample packs refused: " + "; ".join(refused))
    return state.root


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

    def raw(self) -> list[str]:
        """Every message received, whole."""
        with self._lock:
            return [m for _t, m in self.messages]

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
        self.control_path = self.work / "control.sock"

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
            f'[audio]\noutput = "capture:{self.capture}"\nsample_rate = 48000\nvolume = 1.0\n\n'
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
            "KIOSK_DEV_CONTROL": str(self.control_path),
            # the untrained sample voice never ends an utterance on its own
            "KIOSK_FREE_TEXT_MAX_TOKENS": str(HEALTH_TOKENS * 2),
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
        """Wait for READY=1; returns the STATUS= line sent with it."""
        assert self.notify is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.notify.raw():
                lines = message.splitlines()
                if "READY=1" in lines:
                    return next((line for line in lines if line.startswith("STATUS=")), "")
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

    # --- the development control socket (appliance.dev_control) ----------------------

    def control(self, command: dict[str, Any]) -> dict[str, Any]:
        """One command to the daemon's dev control socket (mock GPIO, evdev events, keys)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.control_path))
            sock.sendall((json.dumps(command) + "\n").encode())
            reply = json.loads(sock.makefile("rb").readline())
        assert reply["ok"], reply
        return reply

    def press_gpio(self, pin: int, hold: float = 0.08) -> None:
        """A press and release of a mock pin wired to ground (pull-up: low is pressed)."""
        self.control({"gpio": pin, "level": "low"})
        time.sleep(hold)
        self.control({"gpio": pin, "level": "high"})

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


def expected_capture(samples: np.ndarray, rate: int = 48000, fade_ms: float = 8.0) -> np.ndarray:
    """What the capture sink must hold for a clip played whole at gain 1.0: the samples
    themselves, with the player's documented edges (appliance.audio.player): a fade-in
    over `fade_ms` when the first sample is louder than -40 dBFS, and a decay from the
    last sample to zero after it when that one is."""
    from appliance.audio.player import QUIET

    f = max(1, round(rate * fade_ms / 1000))
    up = (np.arange(1, f + 1, dtype=np.float64) / f).astype(np.float32)
    down = (1.0 - np.arange(1, f + 1, dtype=np.float64) / f).astype(np.float32)
    down[-1] = 0.0
    out = np.array(samples, dtype=np.float32, copy=True)
    if out.size and abs(float(out[0])) > QUIET:
        j = min(f, out.size)
        np.multiply(out[:j], up[:j], out=out[:j])
    if out.size and abs(float(out[-1])) > QUIET:
        out = np.concatenate([out, (down * np.float32(out[-1])).astype(np.float32)])
    return out
