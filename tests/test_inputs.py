"""Inputs: gpiozero mock pins, Jetson.GPIO, evdev, the keyboard, and the router they share."""

from __future__ import annotations

import contextlib
import errno
import os
import termios
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import evdev
import pytest
from evdev import ecodes
from gpiozero import Device

from appliance.config import ButtonConfig, KioskConfig, parse_config
from appliance.inputs import Action, InputEvent, Router, make_sources
from appliance.inputs.evdev_input import EvdevSource, parse_code
from appliance.inputs.jetson import JetsonSource, mock_gpio
from appliance.inputs.keyboard import KeyboardSource

PRESS_DELAY = 0.02  # time for a reader thread to pass an event on


def config(buttons: str, gpio: str = 'pin_factory = "mock"\nbounce_ms = 0') -> KioskConfig:
    return parse_config(f"{buttons}\n[gpio]\n{gpio}\n")


RED = """
[[button]]
name = "red"
source = "gpio"
pin = 17
led = 27
voice = "chen-ama"
phrase = "welcome"
hold = "stop"
hold_seconds = 0.2
cooldown_ms = 0
"""


def wait_for(check: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return check()


class Clock:
    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns

    def ms(self, value: float) -> int:
        self.ns += int(value * 1e6)
        return self.ns


@pytest.fixture
def mock_pins(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """gpiozero's MockFactory as the pin factory; every source made is closed after."""
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    opened: list[Any] = []
    yield opened
    for source in opened:
        source.close()
    if Device.pin_factory is not None:
        Device.pin_factory.reset()


def start(cfg: KioskConfig, opened: list[Any], **router_kw: Any) -> tuple[Router, list[Action]]:
    actions: list[Action] = []
    router = Router(cfg.buttons, actions.append, when_playing=cfg.audio.when_playing, **router_kw)
    sources = make_sources(cfg, router.handle)
    opened.extend(sources)
    opened.append(router)
    router.attach(sources)
    return router, actions


# -- gpiozero -------------------------------------------------------------------


def test_mock_pin_press_plays_the_mapped_phrase(mock_pins: list[Any]) -> None:
    router, actions = start(config(RED), mock_pins)
    assert router.status()["ok"], router.status()
    assert "MockFactory" in router.status()["sources"][0]["detail"]
    pin = Device.pin_factory.pin(17)
    before = time.monotonic_ns()
    pin.drive_low()
    pin.drive_high()
    assert len(actions) == 1
    a = actions[0]
    assert (a.kind, a.voice, a.phrase, a.archival, a.button, a.source, a.when_playing) == (
        "play", "chen-ama", "welcome", None, "red", "gpio", "interrupt",
    )  # fmt: skip
    assert before <= a.requested_ns <= time.monotonic_ns()


def test_hold_does_the_second_action(mock_pins: list[Any]) -> None:
    _, actions = start(config(RED), mock_pins)
    pin = Device.pin_factory.pin(17)
    pin.drive_low()
    assert wait_for(lambda: len(actions) == 2, 1.0)
    pin.drive_high()
    assert [a.kind for a in actions] == ["play", "stop"]
    assert actions[1].button == "red" and actions[1].source == "gpio"
    assert actions[1].requested_ns - actions[0].requested_ns == pytest.approx(0.2e9, abs=1e6)
    # a short press is only a press
    pin.drive_low()
    time.sleep(0.05)
    pin.drive_high()
    time.sleep(0.3)
    assert [a.kind for a in actions] == ["play", "stop", "play"]


def test_led_is_lit_while_playing(mock_pins: list[Any]) -> None:
    router, actions = start(config(RED), mock_pins)
    led = Device.pin_factory.pin(27)
    assert led.state == 0
    Device.pin_factory.pin(17).drive_low()
    # the daemon lights the button's LED when its phrase starts and clears it at the end
    assert router.feedback(actions[0].button, True)
    assert led.state == 1
    Device.pin_factory.pin(17).drive_high()
    assert router.feedback("red", False)
    assert led.state == 0
    assert not router.feedback(None, True) and not router.feedback("nope", True)


def test_debounce_in_software(mock_pins: list[Any]) -> None:
    cfg = config(RED, 'pin_factory = "mock"\nbounce_ms = 40')
    events: list[InputEvent] = []
    from appliance.inputs.gpio import GpioSource

    source = GpioSource(cfg.buttons, cfg.gpio)
    mock_pins.append(source)
    source.start(events.append)
    pin = Device.pin_factory.pin(17)
    # a bouncing contact: three edges in a few ms are one press
    pin.drive_low()
    pin.drive_high()
    pin.drive_low()
    assert [e.action for e in events] == ["press"]
    time.sleep(0.08)  # the window ends, the pin is still low: nothing more
    assert [e.action for e in events] == ["press"]
    pin.drive_high()
    assert [e.action for e in events] == ["press", "release"]
    time.sleep(0.06)
    # a tap shorter than the window: the release is read when the window ends
    pin.drive_low()
    pin.drive_high()
    assert [e.action for e in events] == ["press", "release", "press"]
    assert wait_for(lambda: len(events) == 4, 0.5)
    assert events[-1].action == "release"


def test_a_bad_pin_leaves_the_other_buttons_working(mock_pins: list[Any]) -> None:
    cfg = config(
        RED + '[[button]]\nname = "blue"\nsource = "gpio"\npin = "GPIO99"\n'
        'voice = "chen-ama"\nphrase = "song"\n'
    )
    router, actions = start(cfg, mock_pins)
    status = router.status()["sources"][0]
    assert (
        not status["ok"] and "blue" in status["detail"] and "other buttons work" in status["detail"]
    )
    Device.pin_factory.pin(17).drive_low()
    Device.pin_factory.pin(17).drive_high()
    assert [a.phrase for a in actions] == ["welcome"]


def test_unknown_pin_factory_is_a_clear_status(mock_pins: list[Any]) -> None:
    cfg = config(RED, 'pin_factory = "nosuch"')
    router, _ = start(cfg, mock_pins)
    detail = router.status()["sources"][0]["detail"]
    assert "no pin factory 'nosuch'" in detail and "mock" in detail and "red" in detail


# -- the router -------------------------------------------------------------------


def test_cooldown_per_button() -> None:
    cfg = config(RED.replace("cooldown_ms = 0", "cooldown_ms = 300"))
    clock = Clock()
    actions: list[Action] = []
    router = Router(cfg.buttons, actions.append, clock, hold_thread=False)

    def tap(after_ms: float) -> None:
        at = clock.ms(after_ms)
        router.handle(InputEvent("gpio", "red", "press", at))
        router.handle(InputEvent("gpio", "red", "release", at + 1000))

    tap(0)
    tap(200)  # 200 ms after the accepted press: ignored
    tap(90)  # 290 ms: still ignored
    tap(20)  # 310 ms: plays
    assert [a.requested_ns for a in actions] == [1_000_000_000, 1_310_000_000]
    assert router.counts["cooled_down"] == 2 and router.counts["presses"] == 4
    # a release that went missing does not lock the button
    router.handle(InputEvent("gpio", "red", "press", clock.ms(400)))
    router.handle(InputEvent("gpio", "red", "press", clock.ms(400)))
    assert len(actions) == 4


def test_hold_timed_by_the_router_and_through_a_cooldown() -> None:
    cfg = config(RED.replace("cooldown_ms = 0", "cooldown_ms = 5000"))
    clock = Clock()
    actions: list[Action] = []
    router = Router(cfg.buttons, actions.append, clock, hold_thread=False)
    t0 = clock()
    router.handle(InputEvent("gpio", "red", "press", t0))
    assert router.check_holds(t0 + 199_000_000) == 0
    assert router.check_holds(t0 + 200_000_000) == 1
    assert router.check_holds(t0 + 900_000_000) == 0  # once per press
    router.handle(InputEvent("gpio", "red", "release", t0 + 950_000_000))
    # pressed again inside the cooldown: no play, but holding still stops
    t1 = t0 + 1_000_000_000
    router.handle(InputEvent("gpio", "red", "press", t1))
    assert router.check_holds(t1 + 300_000_000) == 1
    assert [a.kind for a in actions] == ["play", "stop", "stop"]
    # a hold the source reports itself (the keyboard's upper case)
    router.handle(InputEvent("keyboard", "red", "hold", t1 + 10**9))
    assert actions[-1].kind == "stop" and actions[-1].source == "keyboard"


def test_policy_from_the_button_or_audio() -> None:
    cfg = parse_config(
        '[audio]\nwhen_playing = "queue"\n'
        '[[button]]\nname = "a"\nsource = "keyboard"\nkey = "a"\nvoice = "v"\nphrase = "p"\n'
        '[[button]]\nname = "b"\nsource = "keyboard"\nkey = "b"\nvoice = "v"\narchival = "r1"\n'
        'when_playing = "ignore"\nhold = "next_voice"\n'
    )
    actions: list[Action] = []
    router = Router(cfg.buttons, actions.append, when_playing=cfg.audio.when_playing,
                    hold_thread=False)  # fmt: skip
    router.handle(InputEvent("keyboard", "a", "press"))
    router.handle(InputEvent("keyboard", "b", "press"))
    router.handle(InputEvent("keyboard", "b", "hold"))
    router.handle(InputEvent("keyboard", "nobody", "press"))
    assert [(a.kind, a.when_playing, a.phrase, a.archival) for a in actions] == [
        ("play", "queue", "p", None),
        ("play", "ignore", None, "r1"),
        ("next_voice", "interrupt", None, None),
    ]
    assert router.counts["unknown_button"] == 1


def test_web_press_takes_the_same_path() -> None:
    clock = Clock()
    seen: list[Action] = []

    def act(action: Action) -> int:
        seen.append(action)
        return len(seen)  # the daemon answers with an utterance number

    router = Router(config(RED).buttons, act, clock, hold_thread=False)
    assert router.web("chen-ama", "welcome") == 1
    clock.ms(100)
    assert router.web("chen-ama", "welcome") is None  # a double tap
    assert router.web("chen-ama", archival="song-1937") == 2  # another item
    assert router.web("chen-ama", "welcome", source="tech") == 3  # a technician's test
    clock.ms(300)
    assert router.web("chen-ama", "welcome") == 4
    assert router.stop() == 5
    assert [(a.kind, a.source, a.button) for a in seen] == [
        ("play", "web", None), ("play", "web", None), ("play", "tech", None),
        ("play", "web", None), ("stop", "web", None),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="exactly one"):
        router.web("chen-ama")


def test_a_failing_act_never_reaches_the_source() -> None:
    def act(action: Action) -> None:
        raise RuntimeError("the daemon had a bad moment")

    router = Router(config(RED).buttons, act, hold_thread=False)
    router.handle(InputEvent("gpio", "red", "press"))
    assert router.counts["act_errors"] == 1
    with pytest.raises(RuntimeError, match="bad moment"):  # an HTTP handler hears of it
        router.web("chen-ama", "welcome")


def test_ten_thousand_presses_through_the_router() -> None:
    clock = Clock()
    actions: list[Action] = []
    router = Router(config(RED).buttons, actions.append, clock, hold_thread=False)
    start_s = time.perf_counter()
    for _ in range(10_000):
        at = clock.ms(50)
        router.handle(InputEvent("gpio", "red", "press", at))
        router.handle(InputEvent("gpio", "red", "release", at + 10_000_000))
        router.check_holds(at + 20_000_000)
    took = time.perf_counter() - start_s
    assert len(actions) == 10_000 and all(a.kind == "play" for a in actions)
    assert took < 2.0, f"{took:.2f} s for 10 000 presses"


# -- Jetson.GPIO ------------------------------------------------------------------

JETSON = """
[[button]]
name = "orin"
source = "jetson"
pin = 11
led = 13
voice = "chen-ama"
phrase = "welcome"
cooldown_ms = 0
"""


def test_jetson_without_the_library_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "Jetson.GPIO", None)  # not importable
    cfg = config(JETSON, "bounce_ms = 0")
    source = JetsonSource(cfg.buttons, cfg.gpio)
    source.start(lambda e: None)
    status = source.status()
    assert not status["ok"] and "Jetson.GPIO is not installed" in status["detail"]
    assert "orin" in status["detail"]
    source.close()


def test_jetson_mock_press_and_led(mock_pins: list[Any]) -> None:
    router, actions = start(config(JETSON), mock_pins)
    assert router.status()["ok"], router.status()
    gpio = mock_gpio()
    assert gpio.mode == gpio.BOARD
    gpio.drive_low(11)
    gpio.drive_high(11)
    assert [(a.phrase, a.source) for a in actions] == [("welcome", "jetson")]
    assert router.feedback("orin", True) and gpio.outputs[13] == 1
    assert router.feedback("orin", False) and gpio.outputs[13] == 0


def test_jetson_mixed_numbering_is_refused(mock_pins: list[Any]) -> None:
    cfg = config(JETSON.replace("led = 13", 'led = "GPIO27"'))
    router, _ = start(cfg, mock_pins)
    assert "mix header" in router.status()["sources"][0]["detail"]


# -- evdev ------------------------------------------------------------------------

ENCODER = """
[[button]]
name = "one"
source = "evdev"
device = "Arcade Encoder"
code = "KEY_1"
voice = "chen-ama"
phrase = "welcome"
cooldown_ms = 0

[[button]]
name = "trigger"
source = "evdev"
device = "Arcade Encoder"
code = "BTN_TRIGGER"
voice = "chen-ama"
archival = "song-1937"
cooldown_ms = 0
"""


class KernelDevice:
    """What the kernel gives evdev for one device, where the kernel has no uinput:
    a readable fd, evdev `InputEvent`s, grab, and ENODEV once it is unplugged."""

    def __init__(self, name: str, path: str) -> None:
        self.name, self.path = name, path
        self._r, self._w = os.pipe()
        self.fd = self._r
        self._events: list[evdev.InputEvent] = []
        self._lock = threading.Lock()
        self.grabbed = False
        self.gone = False

    def send(self, etype: int, code: int, value: int) -> None:
        now = time.time()
        with self._lock:
            self._events.append(evdev.InputEvent(int(now), int(now % 1 * 1e6), etype, code, value))
            self._events.append(evdev.InputEvent(int(now), 0, ecodes.EV_SYN, ecodes.SYN_REPORT, 0))
        os.write(self._w, b".")

    def unplug(self) -> None:
        self.gone = True
        os.write(self._w, b"!")

    def read(self) -> list[evdev.InputEvent]:
        os.read(self._r, 64)
        if self.gone:
            raise OSError(errno.ENODEV, "No such device")
        with self._lock:
            events, self._events = self._events, []
        return events

    def grab(self) -> None:
        self.grabbed = True

    def ungrab(self) -> None:
        if self.gone:
            raise OSError(errno.ENODEV, "No such device")
        self.grabbed = False

    def absinfo(self, code: int) -> evdev.AbsInfo:
        return evdev.AbsInfo(value=128, min=0, max=255, fuzz=0, flat=15, resolution=0)

    def close(self) -> None:
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)


class Bus:
    """The devices plugged in now (what scanning /dev/input finds)."""

    def __init__(self) -> None:
        self.devices: dict[str, KernelDevice] = {}

    def plug(self, name: str = "Arcade Encoder") -> KernelDevice:
        path = f"/dev/input/event{len(self.devices) + 7}"
        self.devices[path] = dev = KernelDevice(name, path)
        return dev

    def unplug(self, dev: KernelDevice) -> None:
        del self.devices[dev.path]
        dev.unplug()

    def open(self, path: str) -> KernelDevice:
        if path not in self.devices:
            raise OSError(errno.ENOENT, "No such file or directory", path)
        return self.devices[path]

    def list(self) -> list[str]:
        return sorted(self.devices)


def encoder(cfg_text: str, bus: Bus, router: Router) -> EvdevSource:
    cfg = config(cfg_text)
    source = EvdevSource("Arcade Encoder", cfg.buttons, opener=bus.open, lister=bus.list,
                         rescan_seconds=0.05)  # fmt: skip
    source.start(router.handle)
    router.attach([source])
    return source


def test_evdev_event_plays_the_mapped_phrase() -> None:
    bus = Bus()
    dev = bus.plug()
    bus.plug("Some Keyboard")
    actions: list[Action] = []
    router = Router(config(ENCODER).buttons, actions.append, hold_thread=False)
    source = encoder(ENCODER, bus, router)
    try:
        assert wait_for(lambda: source.status()["ok"]), source.status()
        assert dev.grabbed and "grabbed" in source.status()["detail"]
        dev.send(ecodes.EV_KEY, ecodes.KEY_1, 1)
        dev.send(ecodes.EV_KEY, ecodes.KEY_1, 2)  # autorepeat: not another press
        dev.send(ecodes.EV_KEY, ecodes.KEY_1, 0)
        dev.send(ecodes.EV_KEY, ecodes.BTN_TRIGGER, 1)
        dev.send(ecodes.EV_KEY, ecodes.KEY_2, 1)  # not a button of ours
        assert wait_for(lambda: len(actions) == 2)
        time.sleep(PRESS_DELAY)
        assert [(a.phrase, a.archival, a.source) for a in actions] == [
            ("welcome", None, "evdev"),
            (None, "song-1937", "evdev"),
        ]
    finally:
        source.close()
    assert not dev.grabbed


def test_evdev_handler_takes_evdev_events_and_joystick_axes() -> None:
    events: list[InputEvent] = []
    left = ButtonConfig(name="left", source="evdev", voice="v", phrase="p",
                        device="Arcade Encoder", code="ABS_X-")  # fmt: skip
    source = EvdevSource("Arcade Encoder", [*config(ENCODER).buttons, left])
    source._emit = events.append  # the reader thread's emit, without a device
    source._axis_range[ecodes.ABS_X] = (0, 255)
    for etype, code, value in [
        (ecodes.EV_KEY, ecodes.BTN_TRIGGER, 1),
        (ecodes.EV_KEY, ecodes.BTN_TRIGGER, 0),
        (ecodes.EV_ABS, ecodes.ABS_X, 0),  # stick pushed left
        (ecodes.EV_ABS, ecodes.ABS_X, 10),  # still left
        (ecodes.EV_ABS, ecodes.ABS_X, 128),  # centre
    ]:
        source.handle_event(evdev.InputEvent(0, 0, etype, code, value))
    assert [(e.button, e.action) for e in events] == [
        ("trigger", "press"), ("trigger", "release"), ("left", "press"), ("left", "release"),
    ]  # fmt: skip
    assert parse_code("ABS_Y+") == (ecodes.EV_ABS, ecodes.ABS_Y, 1)
    with pytest.raises(ValueError, match="unknown key code"):
        parse_code("KEY_NOPE")
    source.close()


def test_unplugged_encoder_says_so_and_comes_back() -> None:
    bus = Bus()
    dev = bus.plug()
    actions: list[Action] = []
    router = Router(config(ENCODER).buttons, actions.append, hold_thread=False)
    source = encoder(ENCODER, bus, router)
    try:
        assert wait_for(lambda: source.status()["ok"])
        dev.send(ecodes.EV_KEY, ecodes.KEY_1, 1)  # held down while it is pulled out
        assert wait_for(lambda: len(actions) == 1)
        bus.unplug(dev)
        assert wait_for(lambda: "unplugged, waiting" in source.status()["detail"])
        assert not source.status()["ok"] and not router.status()["ok"]
        time.sleep(0.15)  # a few scans find nothing
        assert "unplugged, waiting" in source.status()["detail"]
        again = bus.plug()
        assert wait_for(lambda: source.status()["ok"]), source.status()
        assert source.opened == 2 and again.grabbed
        again.send(ecodes.EV_KEY, ecodes.KEY_1, 1)  # the unplug released it: a new press
        assert wait_for(lambda: len(actions) == 2)
    finally:
        source.close()


def test_encoder_without_permission_says_what_to_do() -> None:
    bus = Bus()
    bus.plug()

    def denied(path: str) -> KernelDevice:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    source = EvdevSource("Arcade Encoder", config(ENCODER).buttons, opener=denied,
                         lister=bus.list, rescan_seconds=0.05)  # fmt: skip
    source.start(lambda e: None)
    try:
        assert wait_for(lambda: "input group" in source.status()["detail"]), source.status()
        assert not source.status()["ok"]
    finally:
        source.close()


def test_missing_encoder_keeps_the_rest_working(mock_pins: list[Any]) -> None:
    cfg = config(RED + ENCODER.replace('"Arcade Encoder"', '"/dev/input/by-id/no-such-encoder"'))
    router, actions = start(cfg, mock_pins)
    assert wait_for(lambda: "not found, waiting" in str(router.status()["sources"]))
    statuses = {s["source"]: s for s in router.status()["sources"]}
    assert statuses["gpio"]["ok"]
    assert not statuses["evdev /dev/input/by-id/no-such-encoder"]["ok"]
    Device.pin_factory.pin(17).drive_low()
    Device.pin_factory.pin(17).drive_high()
    assert [a.button for a in actions] == ["red"]


@pytest.mark.skipif(
    not os.access("/dev/uinput", os.W_OK), reason="the kernel offers no writable /dev/uinput"
)
def test_uinput_device_end_to_end() -> None:
    from evdev import UInput

    name = f"kiosk-test-encoder-{os.getpid()}"
    caps = {ecodes.EV_KEY: [ecodes.KEY_1, ecodes.BTN_TRIGGER]}
    actions: list[Action] = []
    cfg = config(ENCODER.replace("Arcade Encoder", name))
    router = Router(cfg.buttons, actions.append, hold_thread=False)
    ui = UInput(caps, name=name)
    source = EvdevSource(name, cfg.buttons, rescan_seconds=0.1)
    source.start(router.handle)
    try:
        assert wait_for(lambda: source.status()["ok"], 5), source.status()
        ui.write(ecodes.EV_KEY, ecodes.KEY_1, 1)
        ui.syn()
        ui.write(ecodes.EV_KEY, ecodes.KEY_1, 0)
        ui.syn()
        assert wait_for(lambda: len(actions) == 1, 5)
        ui.close()
        assert wait_for(lambda: "unplugged, waiting" in source.status()["detail"], 5)
        ui = UInput(caps, name=name)
        assert wait_for(lambda: source.status()["ok"], 5)
        ui.write(ecodes.EV_KEY, ecodes.BTN_TRIGGER, 1)
        ui.syn()
        assert wait_for(lambda: len(actions) == 2, 5)
        assert actions[1].archival == "song-1937"
    finally:
        source.close()
        ui.close()


# -- keyboard ---------------------------------------------------------------------

KEYS = """
[[button]]
name = "welcome"
source = "keyboard"
key = "a"
voice = "chen-ama"
phrase = "welcome"
hold = "stop"
cooldown_ms = 0

[[button]]
name = "song"
source = "keyboard"
key = "2"
voice = "chen-ama"
phrase = "song"
cooldown_ms = 0
"""


def test_keyboard_keys_in_a_terminal() -> None:
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    actions: list[Action] = []
    cfg = config(KEYS)
    router = Router(cfg.buttons, actions.append, hold_thread=False)
    source = KeyboardSource(cfg.buttons, stream=slave)
    source.start(router.handle)
    try:
        assert source.status()["ok"]
        assert not termios.tcgetattr(slave)[3] & termios.ICANON  # keys arrive one by one
        os.write(master, b"a2xA")
        assert wait_for(lambda: len(actions) == 3)
        assert [(a.kind, a.button, a.source) for a in actions] == [
            ("play", "welcome", "keyboard"), ("play", "song", "keyboard"),
            ("stop", "welcome", "keyboard"),
        ]  # fmt: skip
    finally:
        source.close()
    assert termios.tcgetattr(slave) == before
    os.close(master)
    os.close(slave)


def test_keyboard_stays_off_without_a_terminal() -> None:
    r, w = os.pipe()
    source = KeyboardSource(config(KEYS).buttons, stream=r)
    source.start(lambda e: None)
    status = source.status()
    assert not status["ok"] and "not a terminal" in status["detail"]
    source.close()
    os.close(r)
    os.close(w)
