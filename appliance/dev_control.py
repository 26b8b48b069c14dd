"""A development-only control socket: press mock buttons inside a running daemon.

gpiozero's mock pins and evdev's event objects live inside the daemon's
process, so a test (or a technician trying a config on a workstation) that
runs `kiosk run` as a subprocess cannot touch them from outside.  With
`$KIOSK_DEV_CONTROL=PATH` the daemon listens on a unix stream socket at PATH
(mode 0600) for one JSON object per line and answers one line each:

    {"gpio": 17, "level": "low"}       drive a MockFactory pin (a press with pull-up)
    {"gpio": 17, "level": "high"}      ... and release it
    {"evdev": "Arcade encoder", "type": "EV_KEY", "code": "KEY_A", "value": 1}
                                       an evdev InputEvent through that source's handler
    {"key": "a"}                       a key of the keyboard source
    {"fault": "synthesis-hang"}        fault injection (`FAULTS`): the next
                                       free-text synthesis hangs, as a stuck model would

Real hardware is never driven: `gpio` works only on gpiozero's MockFactory.
Without the variable (every box: the unit does not set it) nothing listens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV = "KIOSK_DEV_CONTROL"
#: Faults the daemon knows (`Kiosk.faults`): `synthesis-hang` blocks the synthesis
#: worker before its first chunk, as a hung model would, so the watchdog pings stop.
FAULTS = ("synthesis-hang",)


class DevControl:
    """The socket server; commands act on the kiosk's current input sources."""

    def __init__(self, kiosk: Any, path: str | Path) -> None:
        self.kiosk = kiosk
        self.path = Path(path)
        self.path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(str(self.path))
        finally:
            os.umask(old)
        self.sock.listen(4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kiosk-dev-control", daemon=True)
        self._thread.start()
        log.warning("development control socket at %s (%s is set)", self.path, ENV)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            for line in stream:
                try:
                    result = self.command(json.loads(line))
                    reply: dict[str, Any] = {"ok": True, **result}
                except Exception as exc:  # every mistake goes back to the caller
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                stream.write((json.dumps(reply) + "\n").encode())
                stream.flush()

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if "gpio" in cmd:
            return self._gpio(cmd)
        if "evdev" in cmd:
            return self._evdev(cmd)
        if "fault" in cmd:
            if cmd["fault"] not in FAULTS:
                raise ValueError(f"unknown fault {cmd['fault']!r} (known: {', '.join(FAULTS)})")
            self.kiosk.faults.add(cmd["fault"])
            log.warning("fault injection: %s is ON", cmd["fault"])
            return {}
        if "key" in cmd:
            source = self._source("keyboard", None)
            source.handle_key(str(cmd["key"]))
            return {}
        raise ValueError('give "gpio", "evdev" or "key"')

    def _source(self, kind: str, device: str | None) -> Any:
        for source in list(self.kiosk.sources):
            if getattr(source, "kind", None) != kind:
                continue
            if device is None or getattr(source, "device_spec", None) == device:
                return source
        raise LookupError(f"no {kind} source{f' for {device!r}' if device else ''} is running")

    def _gpio(self, cmd: dict[str, Any]) -> dict[str, Any]:
        from gpiozero import Device
        from gpiozero.pins.mock import MockFactory

        factory = Device.pin_factory
        if not isinstance(factory, MockFactory):
            raise PermissionError("gpio commands drive gpiozero's mock pins only")
        pin = factory.pin(cmd["gpio"])
        level = cmd.get("level")
        if level == "low":
            pin.drive_low()
        elif level == "high":
            pin.drive_high()
        else:
            raise ValueError('"level" must be "low" or "high"')
        return {"state": pin.state}

    def _evdev(self, cmd: dict[str, Any]) -> dict[str, Any]:
        from evdev import InputEvent, ecodes

        source = self._source("evdev", str(cmd["evdev"]))
        etype = ecodes.ecodes[str(cmd.get("type", "EV_KEY"))]
        code = ecodes.ecodes[str(cmd["code"])]
        now = time.time()
        event = InputEvent(int(now), int((now % 1) * 1e6), etype, code, int(cmd["value"]))
        source.handle_event(event)
        return {}

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        self.path.unlink(missing_ok=True)


def start_if_asked(kiosk: Any) -> DevControl | None:
    """The control socket when $KIOSK_DEV_CONTROL names a path, else None."""
    path = os.environ.get(ENV)
    return DevControl(kiosk, path) if path else None
