"""The watchdog over the daemon's parts: `WATCHDOG=1` only while every part is alive.

systemd restarts a `WatchdogSec=` service whose pings stop.  Pinging from a
timer alone would prove only that one thread runs; a synthesis stuck inside
a model, or an audio callback the sound driver no longer calls, would leave
a kiosk that answers nothing.  So each part beats its own `Heartbeat`:

- the audio callback on every block it fills (and it is called even in
  silence: the stream stays open),
- the synthesis worker on every chunk, and every second while it waits for
  work,
- the web server's self-check, and each input source's poll loop.

The supervisor wakes every `interval` seconds (a third of the watchdog
timeout), pings when no heartbeat is older than its limit, and otherwise
stops pinging and says which part is stuck in `STATUS=` and the log, so the
journal shows why systemd restarted the kiosk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from appliance.notify import Notifier

log = logging.getLogger(__name__)


@dataclass
class Heartbeat:
    """The last sign of life of one part."""

    name: str
    """What the technician reads in the status line ("audio", "synthesis", ...)."""

    limit: float
    """Seconds without a beat after which the part counts as hung."""

    last: float = 0.0
    """time.monotonic() of the last beat."""

    paused: bool = False
    """A part that is not expected to beat now (e.g. an input source that is unplugged
    and retrying has its own status; a part being reloaded)."""

    def beat(self) -> None:
        # One float store: cheap enough for the audio callback, atomic under the GIL.
        self.last = time.monotonic()

    def age(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.last


class Supervisor:
    """Pings systemd's watchdog while every registered heartbeat is fresh."""

    def __init__(
        self,
        notifier: Notifier,
        interval: float,
        *,
        on_stuck: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.notifier = notifier
        self.interval = interval
        self.on_stuck = on_stuck
        self._beats: dict[str, Heartbeat] = {}
        self._probes: dict[str, tuple[float, Callable[[], float | None]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0
        self.stuck: list[str] = []

    def register(self, name: str, limit: float) -> Heartbeat:
        """A heartbeat for one part, fresh from now."""
        with self._lock:
            beat = self._beats.get(name)
            if beat is None:
                beat = self._beats[name] = Heartbeat(name, limit)
            beat.limit = limit
            beat.beat()
            return beat

    def register_probe(self, name: str, limit: float, last: Callable[[], float | None]) -> None:
        """A part that keeps its own time of life: `last()` gives the time.monotonic() of
        its last sign of life, or None while it is not expected to show one (an audio
        device that is unplugged and being retried has its own status instead)."""
        with self._lock:
            self._probes[name] = (limit, last)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._beats.pop(name, None)
            self._probes.pop(name, None)

    def check(self, now: float | None = None) -> list[str]:
        """Names of parts whose heartbeat is too old, with their age (empty: all alive)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            beats = list(self._beats.values())
            probes = list(self._probes.items())
        stuck = [
            f"{b.name} ({b.age(now):.0f} s without a sign of life)"
            for b in beats
            if not b.paused and b.age(now) > b.limit
        ]
        for name, (limit, last) in probes:
            try:
                seen = last()
            except Exception as exc:  # a probe that fails counts as a part that is stuck
                stuck.append(f"{name} (its check failed: {exc})")
                continue
            if seen is not None and now - seen > limit:
                stuck.append(f"{name} ({now - seen:.0f} s without a sign of life)")
        return stuck

    def tick(self) -> bool:
        """One round: ping when all parts are alive; True when pinged."""
        stuck = self.check()
        if stuck:
            if stuck != self.stuck:
                log.error(
                    "watchdog: %s; not pinging systemd, which restarts the kiosk",
                    ", ".join(stuck),
                )
                self.notifier.status("STUCK: " + ", ".join(stuck) + "; restart expected")
                if self.on_stuck is not None:
                    self.on_stuck(stuck)
            self.stuck = stuck
            return False
        if self.stuck:
            log.warning("watchdog: every part is alive again")
        self.stuck = []
        self.notifier.watchdog()
        self.pings += 1
        return True

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="kiosk-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # the watchdog thread must outlive a bug in one check
                log.exception("watchdog round failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval + 1)
            self._thread = None
