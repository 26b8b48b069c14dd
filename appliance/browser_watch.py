"""The frozen-screen watch: the visitor page's heartbeats, and a browser restart when they stop.

An exhibit player watches its own screen output; a kiosk has no frame grabber, so
the page itself proves it is alive: every `[ui] heartbeat_seconds` it posts
`/api/heartbeat` (only while its script runs and its frames are drawn).  When the
beats stop for `[ui] heartbeat_timeout_seconds` (a hung or crashed browser, a blank
page, a page that never loaded), the watch runs the configured restart command
(default `systemctl restart kiosk-browser.service`) as an argv list, never through
a shell, counts it in the stats' events and shows it on `/tech` and `/health`.

A box without a screen (or with a broken browser unit) must not restart forever:
each restart that is not followed by a heartbeat doubles the wait before the
next one (up to `max_backoff_s`), and after `max_restarts` such restarts in a row
the watch gives up until a heartbeat comes back.  One heartbeat resets it all.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: What a restart command may take before it counts as failed.
COMMAND_TIMEOUT_S = 60.0
#: The longest page name a heartbeat may carry (longer ones are cut).
MAX_PAGE_NAME = 32


class EventRecorder(Protocol):
    """The part of the stats the watch uses (`appliance.stats.Stats` has it)."""

    def record_event(self, name: str, detail: str = "") -> None:
        """Store one event (its name, a free-text detail) with the current time."""


@dataclass(frozen=True)
class RestartResult:
    """One run of the restart command."""

    #: Wall-clock time it ran (ISO 8601, UTC, seconds).
    at: str
    #: The command's exit status; None when it could not be started or timed out.
    returncode: int | None
    #: A short line a technician can read: what happened, or why it failed.
    message: str


class BrowserWatch:
    """Heartbeats in, a browser restart out; thread-safe, driven by `check()` or `start()`.

    `clock` is a monotonic clock in seconds (`time.monotonic`; a fake one in tests).
    `runner` runs the argv list and returns its exit status (tests may pass a stand-in;
    the default is `subprocess.run` without a shell, with a timeout).
    """

    def __init__(
        self,
        timeout_s: float,
        restart_command: Sequence[str],
        stats: EventRecorder | None,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_restarts: int = 6,
        max_backoff_s: float = 3600.0,
        runner: Callable[[Sequence[str]], RestartResult] | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"heartbeat timeout must be > 0 seconds, not {timeout_s}")
        command = [str(part) for part in restart_command]
        if not command or not command[0]:
            raise ValueError("the browser restart command is empty: set [ui] restart_command")
        self.timeout_s = float(timeout_s)
        self.restart_command = command
        self.max_restarts = max_restarts
        self.max_backoff_s = max_backoff_s
        self._stats = stats
        self._clock = clock
        self._runner = runner or run_command
        self._lock = threading.Lock()
        # The page gets one timeout from start-up to send its first beat.
        self._reference = clock()
        self._last_beat: float | None = None
        self._page: str | None = None
        self._beats = 0
        self._restarts = 0
        self._in_a_row = 0
        self._last_restart: RestartResult | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def beat(self, page: str = "visitor") -> None:
        """A heartbeat from the page: the screen is alive, every back-off is forgotten."""
        with self._lock:
            now = self._clock()
            if self._in_a_row:
                log.info("heartbeat back after %d browser restart(s)", self._in_a_row)
            self._last_beat = now
            self._reference = now
            self._page = str(page)[:MAX_PAGE_NAME]
            self._beats += 1
            self._in_a_row = 0

    def _wait_s(self) -> float:
        """How long the silence may last now: the timeout, doubled per restart in a row."""
        return min(self.timeout_s * (2**self._in_a_row), max(self.max_backoff_s, self.timeout_s))

    def check(self) -> RestartResult | None:
        """Restart the browser if the beats have stopped for too long; the result, or None."""
        with self._lock:
            if self._in_a_row >= self.max_restarts:
                return None
            if self._clock() - self._reference < self._wait_s():
                return None
            silent = self._clock() - (
                self._last_beat if self._last_beat is not None else self._reference
            )
            self._in_a_row += 1
            self._restarts += 1
            attempt = self._in_a_row
        log.warning(
            "no heartbeat from the kiosk page for %.0f s: restarting the browser (%s), attempt %d",
            silent,
            " ".join(self.restart_command),
            attempt,
        )
        result = self._runner(self.restart_command)
        with self._lock:
            # The restarted browser gets a fresh (backed-off) wait from now on.
            self._reference = self._clock()
            self._last_restart = result
            gave_up = self._in_a_row >= self.max_restarts
        if result.returncode == 0:
            log.info("browser restart: %s", result.message)
        else:
            log.error("browser restart failed: %s", result.message)
        if gave_up:
            log.error(
                "no heartbeat after %d browser restarts in a row: giving up until the page "
                "sends one (is a screen attached? journalctl -u the browser unit)",
                attempt,
            )
        self._record(f"no heartbeat for {silent:.0f} s, attempt {attempt}, {result.message}")
        return result

    def restart_now(self, by: str = "technician") -> RestartResult:
        """Run the restart command at once (the technician page's test button).

        It is counted and logged like a detected freeze, but leaves the back-off alone."""
        log.info("browser restart asked for by the %s", by)
        result = self._runner(self.restart_command)
        with self._lock:
            self._restarts += 1
            self._last_restart = result
            # The restarted page gets a full timeout to send its first beat.
            self._reference = self._clock()
        self._record(f"asked for by the {by}, {result.message}")
        return result

    def _record(self, detail: str) -> None:
        if self._stats is None:
            return
        try:
            self._stats.record_event("browser_restart", detail)
        except Exception:  # the stats must never stop the watch
            log.exception("could not record the browser restart in the stats")

    def status(self) -> dict[str, Any]:
        """What `/tech` and `/health` show: the screen's state and the restarts so far."""
        with self._lock:
            now = self._clock()
            age = None if self._last_beat is None else round(now - self._last_beat, 1)
            if self._in_a_row >= self.max_restarts:
                state = "gave_up"
            elif self._last_beat is None and self._in_a_row == 0:
                state = "waiting"
            elif self._in_a_row:
                state = "restarting"
            elif age is not None and age > self.timeout_s:
                state = "stale"
            else:
                state = "ok"
            last = self._last_restart
            return {
                "state": state,
                "page": self._page,
                "heartbeats": self._beats,
                "last_heartbeat_age_s": age,
                "timeout_s": self.timeout_s,
                "restarts": self._restarts,
                "restarts_in_a_row": self._in_a_row,
                "next_restart_in_s": None
                if state == "gave_up"
                else round(max(0.0, self._reference + self._wait_s() - now), 1),
                "last_restart": None
                if last is None
                else {"at": last.at, "returncode": last.returncode, "message": last.message},
                "command": list(self.restart_command),
            }

    def start(self, interval_s: float | None = None) -> None:
        """Check in a background thread every `interval_s` (default: a quarter of the timeout)."""
        if self._thread is not None:
            return
        interval = interval_s if interval_s is not None else max(0.2, min(5.0, self.timeout_s / 4))
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.check()
                except Exception:  # a bug here must not end the watch silently
                    log.exception("browser watch check failed")

        self._thread = threading.Thread(target=loop, name="browser-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the background thread (the daemon's shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def run_command(argv: Sequence[str]) -> RestartResult:
    """Run `argv` without a shell, with a timeout; never raises."""
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        done = subprocess.run(
            list(argv),
            shell=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        return RestartResult(at, None, f"command not found: {argv[0]} (check [ui] restart_command)")
    except subprocess.TimeoutExpired:
        return RestartResult(at, None, f"{argv[0]} did not finish in {COMMAND_TIMEOUT_S:.0f} s")
    except OSError as error:
        return RestartResult(at, None, f"could not run {argv[0]}: {error}")
    tail = (done.stderr or done.stdout or "").strip().splitlines()
    detail = tail[-1][:200] if tail else ""
    if done.returncode == 0:
        message = "restarted" + (f" ({detail})" if detail else "")
    else:
        message = f"exit status {done.returncode}" + (f": {detail}" if detail else "")
    return RestartResult(at, done.returncode, message)
