"""Buttons and LEDs on a Raspberry Pi's header, through gpiozero.

The pin factory is gpiozero's own seam: `$GPIOZERO_PIN_FACTORY` wins, else
`[gpio] pin_factory`, else gpiozero's choice (lgpio on a Pi 5).  `mock` is
gpiozero's `MockFactory`: tests and a technician's dry run drive the real
gpiozero API with `Device.pin_factory.pin(17).drive_low()`.

Buttons wire the pin to ground with the internal pull-up on (`pull_up`), so a
press reads low.  Debounce happens twice on purpose: gpiozero's `bounce_time`
(done in the pin library where it can be) and the same `Debouncer` every
source uses, because some pin libraries (the mock among them) do not debounce.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from appliance.inputs.base import Debouncer, Emit, StatusMixin
from appliance.inputs.events import InputEvent

if TYPE_CHECKING:
    from appliance.config import ButtonConfig, GpioConfig

log = logging.getLogger("kiosk.inputs")


def factory_name(config_name: str | None) -> str | None:
    """The pin factory to use: `$GPIOZERO_PIN_FACTORY`, else the config's, else None."""
    return os.environ.get("GPIOZERO_PIN_FACTORY") or config_name or None


def pin_factory(name: str | None) -> Any:
    """gpiozero's factory of that name, shared as `Device.pin_factory`; None: gpiozero's choice.

    A factory of the same class that is already `Device.pin_factory` is reused,
    so a test's `Device.pin_factory.pin(n)` is the pin the button listens to.
    """
    from gpiozero import Device

    if name is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        group = list(entry_points(group="gpiozero_pin_factories"))
    chosen = next((ep for ep in group if ep.name == name), None) or next(
        (ep for ep in group if ep.name == name.lower()), None
    )
    if chosen is None:
        known = ", ".join(sorted(ep.name for ep in group))
        raise LookupError(f"gpiozero has no pin factory {name!r} (it has: {known})")
    cls = chosen.load()
    if not isinstance(Device.pin_factory, cls):
        Device.pin_factory = cls()
    return Device.pin_factory


class GpioSource(StatusMixin):
    """Every `source = "gpio"` button (and its LED) on one gpiozero pin factory."""

    kind = "gpio"

    def __init__(self, buttons: Sequence[ButtonConfig], gpio: GpioConfig) -> None:
        self.buttons = list(buttons)
        self.gpio = gpio
        self._init_status("gpio", [b.name for b in self.buttons])
        self._devices: list[Any] = []
        self._leds: dict[str, Any] = {}
        self._debouncers: list[Debouncer] = []

    def start(self, emit: Emit) -> None:
        from gpiozero import LED, Button

        name = factory_name(self.gpio.pin_factory)
        try:
            factory = pin_factory(name)
        except Exception as exc:  # no GPIO chip, library missing, bad name
            self._set_status(
                False,
                f"no GPIO pins ({exc}); set [gpio] pin_factory to one this board has "
                f"(lgpio on a Pi 5) — buttons {', '.join(self._buttons)} do nothing",
            )
            return
        bounce_s = self.gpio.bounce_ms / 1000 or None
        failed: list[str] = []
        for cfg in self.buttons:
            try:
                button = Button(
                    cfg.pin, pull_up=self.gpio.pull_up, bounce_time=bounce_s, pin_factory=factory
                )
            except Exception as exc:
                failed.append(f"{cfg.name} (pin {cfg.pin}: {exc})")
                continue
            self._devices.append(button)
            deb = Debouncer(
                self.gpio.bounce_ms * 1_000_000,
                lambda b=button: bool(b.is_pressed),
                lambda pressed, at_ns, n=cfg.name: emit(
                    InputEvent("gpio", n, "press" if pressed else "release", at_ns)
                ),
            )
            self._debouncers.append(deb)
            button.when_pressed = deb.edge
            button.when_released = deb.edge
            if cfg.led is not None:
                try:
                    led = LED(cfg.led, pin_factory=factory)
                except Exception as exc:
                    failed.append(f"{cfg.name}'s LED (pin {cfg.led}: {exc})")
                else:
                    self._devices.append(led)
                    self._leds[cfg.name] = led
        where = (
            f"pin factory {type(self._devices[0].pin_factory).__name__}" if self._devices else ""
        )
        if failed:
            rest = "the other buttons work" if self._devices else "no button of this source works"
            self._set_status(False, f"cannot use {'; '.join(failed)}; {rest}")
        else:
            pins = ", ".join(f"{b.name}=pin {b.pin}" for b in self.buttons)
            self._set_status(True, f"listening on {pins} ({where})")

    def set_led(self, button: str, on: bool) -> bool:
        led = self._leds.get(button)
        if led is None:
            return False
        if on:
            led.on()
        else:
            led.off()
        return True

    def close(self) -> None:
        for deb in self._debouncers:
            deb.cancel()
        for led in self._leds.values():
            led.off()
        for device in self._devices:
            device.close()
        self._devices.clear()
        self._leds.clear()
        self._debouncers.clear()
        self._set_status(False, "closed")
