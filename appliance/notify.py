"""systemd's notify protocol: READY=1, STATUS=..., WATCHDOG=1, RELOADING=1, STOPPING=1.

The unit runs the daemon as `Type=notify` with `WatchdogSec=`: systemd waits
for `READY=1` before it counts the kiosk as started, shows the last `STATUS=`
line in `systemctl status`, and restarts the service when `WATCHDOG=1` stops
coming (see `supervisor.Supervisor`, which sends it only while every part is
alive).

The sender is systemd-python's `systemd.daemon.notify` when that is installed
(the distribution's binding of `sd_notify`), else the pure-Python `sdnotify`
package.  `sdnotify` handles abstract sockets (`@name`) but encodes messages
as Latin-1 and drops anything else silently, so messages are sent as UTF-8
bytes on its socket.  Without `$NOTIFY_SOCKET` (a shell, a test) every call
is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def watchdog_seconds() -> float | None:
    """The watchdog timeout systemd gave this process ($WATCHDOG_USEC), or None.

    $WATCHDOG_PID, when set, must name this process (systemd sets it; a child
    that inherited the variables must not ping for its parent).
    """
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number; no watchdog pings", usec)
        return None
    return value / 1e6 if value > 0 else None


def _systemd_python_sender() -> Callable[[str], None] | None:
    try:
        from systemd import daemon  # type: ignore[import-not-found]
    except ImportError:
        return None

    def send(message: str) -> None:
        daemon.notify(message)

    return send


def _sdnotify_sender(address: str) -> Callable[[str], None] | None:
    import sdnotify

    notifier = sdnotify.SystemdNotifier()
    sock = getattr(notifier, "socket", None)
    if sock is None:
        log.warning("NOTIFY_SOCKET=%s cannot be reached; systemd will not hear from us", address)
        return None

    def send(message: str) -> None:
        sock.sendall(message.encode("utf-8"))

    return send


class Notifier:
    """One process's channel to systemd; safe to call from any thread."""

    def __init__(self) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET") or None
        self._lock = threading.Lock()
        self._send: Callable[[str], None] | None = None
        self.via = "none"
        if self.address:
            self._send = _systemd_python_sender()
            self.via = "systemd-python"
            if self._send is None:
                self._send = _sdnotify_sender(self.address)
                self.via = "sdnotify" if self._send else "none"
        self.last_status = ""

    @property
    def enabled(self) -> bool:
        return self._send is not None

    def notify(self, message: str) -> bool:
        """Send one message (`KEY=value` lines); False when there is no one to tell."""
        if self._send is None:
            return False
        with self._lock:
            try:
                self._send(message)
            except OSError as exc:
                # systemd going away (shutdown) must not take the daemon down with it.
                log.debug("notify %r failed: %s", message.split("\n", 1)[0], exc)
                return False
        return True

    def ready(self, status: str) -> bool:
        self.last_status = status
        return self.notify(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        """A line for `systemctl status` (sent only when it changed)."""
        if status == self.last_status:
            return True
        self.last_status = status
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self, status: str = "reloading configuration and voices") -> bool:
        self.last_status = status
        # MONOTONIC_USEC: what systemd's `Type=notify-reload` asks of a reload message.
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        self.last_status = status
        return self.notify(f"STOPPING=1\nSTATUS={status}")


def listen(path: str) -> socket.socket:
    """A bound unix datagram socket at `path`: what systemd listens on (tests, `kiosk
    bench --daemon`); an `@name` path is an abstract socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + path[1:] if path.startswith("@") else path)
    return sock
