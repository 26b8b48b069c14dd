"""USB arcade encoders (and any other Linux input device) through evdev.

One `EvdevSource` per device, named by path (`/dev/input/by-id/...`, stable
across ports) or by the name the device reports (`"DragonRise Inc. Generic
USB Joystick"`).  Its buttons are key codes (`KEY_1`, `BTN_TRIGGER` ...); a
joystick direction is an axis with a sign (`ABS_X-`, `ABS_Y+`): pressed while
the stick is pushed past three quarters of the way that side.

The device is grabbed (`EVIOCGRAB`) so its keys never reach the console or
the browser.  A reader thread waits on the device and a wake pipe; when the
device goes away (unplugged: the read fails with ENODEV) every held button is
released, the status says "unplugged, waiting", and the thread looks for the
device again every `rescan_seconds` by scanning `/dev/input` (no udev needed),
then grabs and reads it again: replugging is all a technician does.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import re
import selectors
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance.inputs.base import Emit, InputError, StatusMixin
from appliance.inputs.events import InputEvent

if TYPE_CHECKING:
    from appliance.config import ButtonConfig

log = logging.getLogger("kiosk.inputs")

#: Where input devices appear.
INPUT_DIR = "/dev/input"
_AXIS = re.compile(r"(ABS_[A-Z0-9_]+)([+-])")
#: Key values: 0 up, 1 down, 2 autorepeat (ignored: a hold is timed by the router).
_UP, _DOWN = 0, 1


@dataclass(frozen=True)
class Binding:
    """One button of a device: an event type and code, and for an axis its direction."""

    button: str
    type: int
    code: int
    direction: int = 0
    """-1 / +1 for an axis direction, 0 for a key."""


def parse_code(code: str) -> tuple[int, int, int]:
    """(type, code, direction) of `KEY_A`, `BTN_TRIGGER` or `ABS_X-`; InputError if unknown."""
    from evdev import ecodes

    if m := _AXIS.fullmatch(code):
        number = ecodes.ecodes.get(m[1])
        if number is None:
            raise InputError(f"unknown axis {m[1]!r} (see `python -m evdev.evtest`)")
        return ecodes.EV_ABS, number, -1 if m[2] == "-" else 1
    number = ecodes.ecodes.get(code)
    if number is None or not code.startswith(("KEY_", "BTN_")):
        raise InputError(
            f"unknown key code {code!r}: use a name such as KEY_A or BTN_TRIGGER "
            "(`python -m evdev.evtest` shows what the encoder sends)"
        )
    return ecodes.EV_KEY, number, 0


def _open_device(path: str) -> Any:
    from evdev import InputDevice

    return InputDevice(path)


def _list_devices() -> list[str]:
    # Every event node, readable or not: one we may not open is reported (the
    # input group is missing), not silently skipped as evdev.list_devices does.
    return sorted(glob.glob(os.path.join(INPUT_DIR, "event*")))


class EvdevSource(StatusMixin):
    """The buttons of one evdev device; survives unplug and replug.

    `opener` and `lister` are evdev's `InputDevice` and `list_devices` unless a
    test passes stand-ins; everything read goes through `handle_event`, the
    same handler for a real device and for evdev `InputEvent`s a test makes.
    """

    kind = "evdev"

    def __init__(
        self,
        device: str,
        buttons: Sequence[ButtonConfig],
        *,
        grab: bool = True,
        rescan_seconds: float = 1.0,
        opener: Callable[[str], Any] = _open_device,
        lister: Callable[[], Iterable[str]] = _list_devices,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.device_spec = device
        self._grab = grab
        self._rescan = rescan_seconds
        self._opener = opener
        self._lister = lister
        self._clock = clock
        self._init_status(f"evdev {device}", [b.name for b in buttons])
        self.bindings: dict[tuple[int, int], list[Binding]] = {}
        self.bad_codes: list[str] = []
        for b in buttons:
            try:
                etype, code, direction = parse_code(b.code or "")
            except InputError as exc:
                self.bad_codes.append(f"{b.name}: {exc}")
                continue
            self.bindings.setdefault((etype, code), []).append(
                Binding(b.name, etype, code, direction)
            )
        self._pressed: set[str] = set()
        self._axis_range: dict[int, tuple[int, int]] = {}
        self._emit: Emit | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self.dev: Any = None
        self.opened = 0  # how many times the device was (re)opened

    # -- finding and opening the device -------------------------------------

    def _find(self) -> Any:
        """The device if it is plugged in now, else None; OSError when it cannot be opened."""
        spec = self.device_spec
        if spec.startswith("/"):
            if not os.path.exists(spec):
                return None
            return self._opener(spec)
        denied = 0
        for path in self._lister():
            try:
                dev = self._opener(path)
            except PermissionError:
                denied += 1
                continue
            except OSError:
                continue  # gone between listing and opening
            if dev.name == spec:
                return dev
            dev.close()
        if denied:
            raise PermissionError(
                errno.EACCES, f"{denied} input device(s) could not be opened to read their names"
            )
        return None

    def _attach(self, dev: Any) -> None:
        from evdev import ecodes

        self._axis_range.clear()
        for (etype, code), _ in self.bindings.items():
            if etype == ecodes.EV_ABS:
                info = dev.absinfo(code)
                self._axis_range[code] = (info.min, info.max)
        grabbed = ""
        if self._grab:
            try:
                dev.grab()
                grabbed = ", grabbed"
            except OSError as exc:
                grabbed = f", not grabbed ({exc.strerror}: another program holds it)"
        self.dev = dev
        self.opened += 1
        detail = f"reading {getattr(dev, 'path', self.device_spec)} ({dev.name}){grabbed}"
        if self.bad_codes:
            detail += f"; ignored: {'; '.join(self.bad_codes)}"
        self._set_status(not self.bad_codes, detail)

    # -- events -------------------------------------------------------------

    def handle_event(self, event: Any) -> None:
        """Turn one evdev `InputEvent` into press / release of the buttons bound to it."""
        bindings = self.bindings.get((event.type, event.code))
        if not bindings or self._emit is None:
            return
        now = self._clock()
        for b in bindings:
            if b.direction == 0:
                if event.value == _DOWN:
                    pressed = True
                elif event.value == _UP:
                    pressed = False
                else:
                    continue  # autorepeat
            else:
                low, high = self._axis_range.get(b.code, (-32768, 32767))
                reach = (event.value - low) / ((high - low) or 1)  # 0 .. 1
                pressed = reach <= 0.25 if b.direction < 0 else reach >= 0.75
            if pressed == (b.button in self._pressed):
                continue
            if pressed:
                self._pressed.add(b.button)
            else:
                self._pressed.discard(b.button)
            self._emit(InputEvent("evdev", b.button, "press" if pressed else "release", now))

    def _release_all(self) -> None:
        for name in sorted(self._pressed):
            if self._emit is not None:
                self._emit(InputEvent("evdev", name, "release", self._clock()))
        self._pressed.clear()

    # -- the reader thread ----------------------------------------------------

    def start(self, emit: Emit) -> None:
        self._emit = emit
        if not self.bindings:
            self._set_status(False, f"no usable buttons: {'; '.join(self.bad_codes)}")
            return
        self._set_status(False, f"looking for {self.device_spec}")
        self._thread = threading.Thread(
            target=self._run, name=f"kiosk-evdev-{self.device_spec}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                dev = self._find()
            except OSError as exc:
                hint = (
                    " (the daemon's user needs the input group)"
                    if isinstance(exc, PermissionError)
                    else ""
                )
                self._set_status(False, f"cannot open {self.device_spec}: {exc}{hint}; retrying")
                self._stop.wait(self._rescan)
                continue
            if dev is None:
                if self.opened:
                    self._set_status(False, f"{self.device_spec} unplugged, waiting for it")
                else:
                    self._set_status(
                        False,
                        f"{self.device_spec} not found, waiting for it (plug it in; "
                        "`ls /dev/input/by-id` lists devices)",
                    )
                self._stop.wait(self._rescan)
                continue
            self._attach(dev)
            self._read(dev)

    def _read(self, dev: Any) -> None:
        sel = selectors.DefaultSelector()
        sel.register(dev.fd, selectors.EVENT_READ, "dev")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    try:
                        events = list(dev.read())
                    except BlockingIOError:
                        continue  # woken without an event: nothing to read yet
                    for event in events:
                        self.handle_event(event)
        except OSError as exc:
            if exc.errno not in (errno.ENODEV, errno.EIO, errno.EBADF):
                log.warning("evdev %s: read failed: %s", self.device_spec, exc)
            self._release_all()
            self._set_status(False, f"{self.device_spec} unplugged, waiting for it")
        finally:
            sel.close()
            self.dev = None
            self._close_dev(dev)

    def _close_dev(self, dev: Any) -> None:
        if self._grab:
            with contextlib.suppress(OSError):  # gone with the device
                dev.ungrab()
        with contextlib.suppress(OSError):
            dev.close()

    def set_led(self, button: str, on: bool) -> bool:
        return False  # encoders' LEDs light by themselves

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(3)
            self._thread = None
        self._release_all()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        self._set_status(False, "closed")
