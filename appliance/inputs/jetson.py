"""Buttons and LEDs on a Jetson Orin's 40-pin header, through NVIDIA's Jetson.GPIO.

Jetson.GPIO is imported only when a `source = "jetson"` button exists, so
other boxes never need it; when it is missing (or the board is not a Jetson)
the source says so in its status and the other sources work.  Like gpiozero's
`MockFactory`, `MockJetsonGPIO` ships here: with `[gpio] pin_factory = "mock"`
(or `$GPIOZERO_PIN_FACTORY=mock`) the same code runs on any machine, and
tests drive `mock_gpio().drive_low(pin)`.

Pins are numbered as on the header (`BOARD`, a plain number or `BOARD11`) or
by Broadcom names (`BCM`, `GPIO17` / `BCM17`); one box uses one numbering.
The Orin's pins have no usable internal pull-ups: wire an external pull-up
(or pull-down with `pull_up = false`).
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from appliance.inputs.base import Debouncer, Emit, InputError, StatusMixin
from appliance.inputs.events import InputEvent
from appliance.inputs.gpio import factory_name

if TYPE_CHECKING:
    from appliance.config import ButtonConfig, GpioConfig

_BOARD_NAME = re.compile(r"BOARD(\d+)")
_BCM_NAME = re.compile(r"(?:GPIO|BCM)(\d+)")


class MockJetsonGPIO:
    """The part of Jetson.GPIO's API the kiosk uses, on pins a test drives.

    Inputs float high (as with the pull-up the wiring provides); `drive_low`
    and `drive_high` change a pin and call its edge callback like the real
    library's event thread would.  `outputs` holds what each output pin was set to.
    """

    BOARD, BCM = 10, 11
    OUT, IN = 0, 1
    LOW, HIGH = 0, 1
    RISING, FALLING, BOTH = 31, 32, 33
    PUD_OFF, PUD_DOWN, PUD_UP = 20, 21, 22

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.mode: int | None = None
        self.levels: dict[int, int] = {}
        self.outputs: dict[int, int] = {}
        self._callbacks: dict[int, Callable[[int], None]] = {}

    def setwarnings(self, flag: bool) -> None:
        pass

    def setmode(self, mode: int) -> None:
        if self.mode is not None and mode != self.mode:
            raise ValueError("a different mode has already been set")
        self.mode = mode

    def getmode(self) -> int | None:
        return self.mode

    def setup(self, channel: int, direction: int, pull_up_down: int = 20, initial: int = 0) -> None:
        if self.mode is None:
            raise RuntimeError("call setmode() first")
        with self._lock:
            if direction == self.OUT:
                self.outputs[channel] = initial
            else:
                self.levels.setdefault(channel, self.LOW if pull_up_down == self.PUD_DOWN else 1)

    def input(self, channel: int) -> int:
        with self._lock:
            return self.levels[channel]

    def output(self, channel: int, value: int) -> None:
        with self._lock:
            if channel not in self.outputs:
                raise RuntimeError(f"channel {channel} is not set up as an output")
            self.outputs[channel] = int(bool(value))

    def add_event_detect(
        self, channel: int, edge: int, callback: Callable[[int], None], bouncetime: int = 0
    ) -> None:
        with self._lock:
            if channel not in self.levels:
                raise RuntimeError(f"channel {channel} is not set up as an input")
            self._callbacks[channel] = callback

    def remove_event_detect(self, channel: int) -> None:
        with self._lock:
            self._callbacks.pop(channel, None)

    def cleanup(self, channels: Sequence[int] | None = None) -> None:
        with self._lock:
            for c in list(self.levels if channels is None else channels):
                self.levels.pop(c, None)
                self.outputs.pop(c, None)
                self._callbacks.pop(c, None)
            if not self.levels and not self.outputs:
                self.mode = None

    # -- what a test does to the pins ---------------------------------------

    def _drive(self, channel: int, level: int) -> None:
        with self._lock:
            if self.levels.get(channel) == level:
                return
            self.levels[channel] = level
            callback = self._callbacks.get(channel)
        if callback is not None:
            callback(channel)

    def drive_low(self, channel: int) -> None:
        self._drive(channel, self.LOW)

    def drive_high(self, channel: int) -> None:
        self._drive(channel, self.HIGH)


_MOCK: MockJetsonGPIO | None = None


def mock_gpio() -> MockJetsonGPIO:
    """The process's one mock header (like gpiozero's `Device.pin_factory`)."""
    global _MOCK
    if _MOCK is None:
        _MOCK = MockJetsonGPIO()
    return _MOCK


def load_gpio(pin_factory: str | None) -> Any:
    """Jetson.GPIO (or the mock for pin factory `mock`); ImportError / RuntimeError if absent."""
    if factory_name(pin_factory) == "mock":
        return mock_gpio()
    return importlib.import_module("Jetson.GPIO")


def numbering(pins: Sequence[int | str]) -> tuple[str, list[int]]:
    """("BOARD" | "BCM", pin numbers) of a box's pins; InputError for mixed or unknown names."""
    modes, numbers = set(), []
    for pin in pins:
        if isinstance(pin, int):
            modes.add("BOARD")
            numbers.append(pin)
        elif m := _BOARD_NAME.fullmatch(pin):
            modes.add("BOARD")
            numbers.append(int(m[1]))
        elif m := _BCM_NAME.fullmatch(pin):
            modes.add("BCM")
            numbers.append(int(m[1]))
        else:
            raise InputError(
                f"jetson pin {pin!r}: give a header number (11 or BOARD11) or GPIO17 / BCM17"
            )
    if len(modes) > 1:
        raise InputError("jetson pins mix header (BOARD) and GPIO (BCM) numbers; use one kind")
    return (modes.pop() if modes else "BOARD"), numbers


class JetsonSource(StatusMixin):
    """Every `source = "jetson"` button (and its LED) on Jetson.GPIO."""

    kind = "jetson"

    def __init__(
        self, buttons: Sequence[ButtonConfig], gpio: GpioConfig, *, module: Any = None
    ) -> None:
        self.buttons = list(buttons)
        self.gpio = gpio
        self._module = module
        self._init_status("jetson", [b.name for b in self.buttons])
        self._inputs: list[int] = []
        self._leds: dict[str, int] = {}
        self._debouncers: list[Debouncer] = []
        self.gpio_lib: Any = None

    def start(self, emit: Emit) -> None:
        names = ", ".join(self._buttons)
        try:
            lib = self._module if self._module is not None else load_gpio(self.gpio.pin_factory)
        except ImportError:
            self._set_status(
                False,
                "Jetson.GPIO is not installed (pip install Jetson.GPIO on the Orin, or "
                f'[gpio] pin_factory = "mock" for a dry run); buttons {names} do nothing',
            )
            return
        except RuntimeError as exc:  # e.g. "Could not determine Jetson model"
            self._set_status(False, f"Jetson.GPIO cannot run here ({exc}); buttons {names} off")
            return
        values = [b.pin for b in self.buttons] + [b.led for b in self.buttons if b.led is not None]
        try:
            mode, numbers = numbering([v for v in values if v is not None])
        except InputError as exc:
            self._set_status(False, str(exc))
            return
        number = dict(zip([v for v in values if v is not None], numbers, strict=True))
        self.gpio_lib = lib
        lib.setwarnings(False)
        try:
            lib.setmode(getattr(lib, mode))
        except ValueError as exc:
            self._set_status(False, f"Jetson.GPIO numbering: {exc}")
            return
        active = lib.LOW if self.gpio.pull_up else lib.HIGH
        failed: list[str] = []
        for cfg in self.buttons:
            pin = number[cfg.pin]
            try:
                lib.setup(pin, lib.IN)
                deb = Debouncer(
                    self.gpio.bounce_ms * 1_000_000,
                    lambda p=pin: lib.input(p) == active,
                    lambda pressed, at_ns, n=cfg.name: emit(
                        InputEvent("jetson", n, "press" if pressed else "release", at_ns)
                    ),
                )
                kwargs = {"bouncetime": self.gpio.bounce_ms} if self.gpio.bounce_ms else {}
                lib.add_event_detect(pin, lib.BOTH, callback=lambda _ch, d=deb: d.edge(), **kwargs)
            except Exception as exc:
                failed.append(f"{cfg.name} (pin {cfg.pin}: {exc})")
                continue
            self._inputs.append(pin)
            self._debouncers.append(deb)
            if cfg.led is not None:
                led = number[cfg.led]
                try:
                    lib.setup(led, lib.OUT, initial=lib.LOW)
                except Exception as exc:
                    failed.append(f"{cfg.name}'s LED (pin {cfg.led}: {exc})")
                else:
                    self._leds[cfg.name] = led
        if failed:
            rest = "the other buttons work" if self._inputs else "no button of this source works"
            self._set_status(False, f"cannot use {'; '.join(failed)}; {rest}")
        else:
            listed = ", ".join(f"{b.name}={mode} {number[b.pin]}" for b in self.buttons)
            self._set_status(True, f"listening on {listed}")

    def set_led(self, button: str, on: bool) -> bool:
        pin = self._leds.get(button)
        if pin is None:
            return False
        self.gpio_lib.output(pin, self.gpio_lib.HIGH if on else self.gpio_lib.LOW)
        return True

    def close(self) -> None:
        for deb in self._debouncers:
            deb.cancel()
        if self.gpio_lib is not None:
            for pin in self._inputs:
                self.gpio_lib.remove_event_detect(pin)
            for pin in self._leds.values():
                self.gpio_lib.output(pin, self.gpio_lib.LOW)
            used = self._inputs + list(self._leds.values())
            if used:
                self.gpio_lib.cleanup(used)
        self._inputs.clear()
        self._leds.clear()
        self._debouncers.clear()
        self._set_status(False, "closed")
