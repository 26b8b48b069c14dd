"""The input-source seam: the `InputSource` protocol and what sources share.

Like gpiozero's pin factories, every source (gpiozero, Jetson.GPIO, evdev,
keyboard) is one equal implementation chosen by the config; the test
implementations (gpiozero's `MockFactory`, `jetson.MockJetsonGPIO`) ship with
the product.  A source never raises out of `start()`: a missing library, an
unplugged encoder or a bad pin becomes `status()["ok"] = False` with a detail
a technician can act on, and every other source keeps working.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from appliance.inputs.events import InputEvent

log = logging.getLogger("kiosk.inputs")

Emit = Callable[[InputEvent], None]


class InputError(ValueError):
    """A button setting a source cannot use (an unknown key code, mixed pin numbering)."""


@runtime_checkable
class InputSource(Protocol):
    """One source of button events."""

    kind: str
    """`gpio`, `jetson`, `evdev` or `keyboard` (the `[[button]] source` value)."""

    def start(self, emit: Emit) -> None:
        """Begin delivering events to `emit` (from any thread); never raises."""

    def close(self) -> None:
        """Stop, release the hardware (ungrab, pins back to inputs, LEDs off); idempotent."""

    def status(self) -> dict[str, Any]:
        """{"source", "ok", "detail", "buttons"}: `detail` is a sentence for a technician."""

    def set_led(self, button: str, on: bool) -> bool:
        """Light or clear `button`'s LED; False when this source has no LED for it."""


class StatusMixin:
    """The `status()` every source reports, kept behind a lock (sources use threads)."""

    kind = "?"

    def _init_status(self, label: str, buttons: list[str]) -> None:
        self._status_lock = threading.Lock()
        self._label = label
        self._buttons = buttons
        self._ok = False
        self._detail = "not started"

    def _set_status(self, ok: bool, detail: str) -> None:
        with self._status_lock:
            changed = (ok, detail) != (self._ok, self._detail)
            self._ok, self._detail = ok, detail
        if changed:
            (log.info if ok else log.warning)("%s: %s", self._label, detail)

    def status(self) -> dict[str, Any]:
        with self._status_lock:
            return {
                "source": self._label,
                "ok": self._ok,
                "detail": self._detail,
                "buttons": list(self._buttons),
            }


class Debouncer:
    """Software debounce of one button, the same on every pin library.

    The first edge counts at once (no added latency); edges in the next
    `bounce_ns` are contact bounce and ignored, and when the window ends the
    level is read again so a short tap or a bouncing release is not lost.
    """

    def __init__(
        self,
        bounce_ns: int,
        read_pressed: Callable[[], bool],
        on_change: Callable[[bool, int], None],
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._bounce = bounce_ns
        self._read = read_pressed
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self.pressed = False
        self._last_ns: int | None = None
        self._timer: threading.Timer | None = None
        self.ignored = 0

    def edge(self) -> None:
        """Call on every edge the pin library reports."""
        now = self._clock()
        level = self._read()
        with self._lock:
            if self._last_ns is not None and now - self._last_ns < self._bounce:
                self.ignored += 1
                if self._timer is None:
                    delay = (self._last_ns + self._bounce - now) / 1e9
                    self._timer = threading.Timer(delay, self._settle)
                    self._timer.daemon = True
                    self._timer.start()
                return
            if level == self.pressed:
                return
            self.pressed, self._last_ns = level, now
        self._on_change(level, now)

    def _settle(self) -> None:
        now = self._clock()
        level = self._read()
        with self._lock:
            self._timer = None
            if level == self.pressed:
                return
            self.pressed, self._last_ns = level, now
        self._on_change(level, now)

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
