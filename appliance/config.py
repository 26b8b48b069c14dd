"""The box's one configuration file (`/etc/kiosk/kiosk.toml`), validated at start.

Every part of the daemon reads its settings from the frozen dataclasses here,
never from the TOML itself, so a typo is caught once, at start (or on the
workstation with `kiosk config check FILE`), with the file, the key, what is
allowed and what was found; all the mistakes of a file are reported together
so a technician fixes them in one go.  Unknown keys are errors: a misspelt key
that is silently ignored would leave a gallery with the wrong volume.

What the file cannot tell on its own (does button 2's voice exist? is the
phrase in that voice's pack?) is checked by the daemon against the installed
voices; here only the shape is checked.

Relative paths (`state_dir`, `capture:DIR`, `blocklist_file`) are relative to
the folder of the config file, so a demo or test config can live next to its
state folder.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from provisioning.state import state_dir as default_state_dir

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("/etc/kiosk/kiosk.toml")
#: Environment variable naming the config file when no path is given.
CONFIG_ENV = "KIOSK_CONFIG"
MAX_CONFIG_BYTES = 1 << 20

#: What a visitor's press does while something is playing.
WHEN_PLAYING = ("interrupt", "queue", "ignore")
#: Synthesis backends (the same names as `engines.backends.selection`; a test keeps them equal).
BACKENDS = ("auto", "tensorrt", "torch-cuda", "onnxruntime", "torch-eager")
BUTTON_SOURCES = ("gpio", "jetson", "evdev", "keyboard")
HOLD_ACTIONS = ("stop", "next_voice")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Voice and phrase ids: the pack format's rule (provisioning.pack_format).
_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_PIN_DIGITS = re.compile(r"[0-9]{4,12}")
_PIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_EVDEV_CODE = re.compile(r"(KEY|BTN)_[A-Z0-9_]{1,32}|ABS_[A-Z0-9_]{1,32}[+-]")


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class WebConfig:
    """`[web]`: the local HTTP server the touch screen and the technician use."""

    host: str = "127.0.0.1"
    """Address to listen on; the default keeps the API on the box itself."""
    port: int = 8080
    """TCP port (1-65535)."""
    pin: str = ""
    """Technician PIN, 4-12 digits (a string: leading zeros count); empty disables `/tech`."""
    allow_remote_tech: bool = False
    """Serve `/tech` to other machines too (only when `host` is not loopback)."""


@dataclass(frozen=True)
class AudioConfig:
    """`[audio]`: the one output stream and how loud it may play."""

    output: str = "default"
    """`default` (the system's device), `null` (no device, paced in real time), a
    sounddevice device name or index, or `capture:DIR` (every utterance as a WAV in DIR;
    DIR is absolute here, resolved against the config file's folder)."""
    sample_rate: int = 48000
    """Output rate in Hz (8000-192000); clips are resampled to it before they play."""
    blocksize: int = 256
    """Frames per audio callback (32-4096). Small blocks let a press reach the callback
    sooner (256 frames at 48 kHz: a new clip is picked up within 5.3 ms)."""
    latency: str | float = "high"
    """The device's buffering: `low`, `high` (PortAudio's safe default) or seconds."""
    volume: float = 0.8
    """Volume at start (0-1) when no `[schedule] volume` step applies."""
    gain_cap: float = 1.0
    """Hard ceiling on the gain (0-1): no API call or schedule can play louder."""
    fade_ms: float = 8.0
    """Fade length in ms (5-10) on stop / interrupt, so nothing clicks."""
    when_playing: str = "interrupt"
    """A press while playing: `interrupt` (fade out, play the new one), `queue`, `ignore`."""
    realtime_priority: int = 10
    """SCHED_FIFO priority of the audio thread (1-99; 0: normal). Keeps presses prompt
    while synthesis loads the CPU; needs `LimitRTPRIO=` in the unit (else it logs and
    runs at normal priority). Never with a free-running device such as ALSA's null PCM."""


@dataclass(frozen=True)
class BackendConfig:
    """`[backend]`: which runtime synthesises speech."""

    name: str = "auto"
    """`auto` (the fastest that works here), `tensorrt`, `torch-cuda`, `onnxruntime`,
    `torch-eager`."""


@dataclass(frozen=True)
class ButtonConfig:
    """One `[[button]]`: a physical or keyboard button and what it plays."""

    name: str
    """Unique name (for logs and stats); defaults to `button<N>`."""
    source: str
    """Where presses come from: `gpio`, `jetson`, `evdev` or `keyboard`."""
    voice: str
    """Voice id (checked against the installed voices by the daemon)."""
    phrase: str | None = None
    """Cached phrase id to play (exactly one of `phrase` / `archival`)."""
    archival: str | None = None
    """Archival recording id (the file's stem) to play instead of a phrase."""
    pin: int | str | None = None
    """gpio / jetson: the pin (a number, or a name such as `GPIO17` / `BOARD11`)."""
    device: str | None = None
    """evdev: the input device, a `/dev/input/...` path or the device's name."""
    code: str | None = None
    """evdev: the key code name, e.g. `KEY_A` or `BTN_TRIGGER`."""
    key: str | None = None
    """keyboard: one character."""
    hold: str | None = None
    """What holding the button does: `stop`, `next_voice`, or None (`"none"` in the file)."""
    hold_seconds: float = 1.5
    """How long a press must last to count as a hold (0.2-10 s)."""
    led: int | str | None = None
    """Pin of the button's LED (gpio / jetson), lit while its phrase plays."""
    cooldown_ms: int = 300
    """Presses closer than this to the previous one are ignored (0-10000 ms)."""
    when_playing: str | None = None
    """Overrides `[audio] when_playing` for this button; None: the `[audio]` value."""


@dataclass(frozen=True)
class GpioConfig:
    """`[gpio]`: gpiozero settings shared by every gpio button."""

    pin_factory: str | None = None
    """gpiozero's pin factory name (`lgpio`, `rpigpio`, `mock` ...); None: gpiozero's
    choice. `$GPIOZERO_PIN_FACTORY` wins over this value."""
    pull_up: bool = True
    """Buttons connect the pin to ground (internal pull-up on)."""
    bounce_ms: int = 30
    """Debounce time in ms (0-1000)."""


@dataclass(frozen=True)
class OpenPeriod:
    """One `[[schedule.open]]` entry: days of the week and a time span on each."""

    days: tuple[int, ...]
    """Weekdays, Monday = 0 ... Sunday = 6 (from `"mon-fri"`, `"sat,sun"` ...)."""
    start: dt.time
    """Opening time (the `from` key, `HH:MM`)."""
    end: dt.time
    """Closing time (the `to` key, `HH:MM`, later than `from`)."""


@dataclass(frozen=True)
class VolumeStep:
    """One `[[schedule.volume]]` entry: from this time of day on, this volume."""

    start: dt.time
    """Time of day (the `from` key, `HH:MM`); the step lasts until the next one."""
    volume: float
    """Volume 0-1 (still capped by `[audio] gain_cap`)."""


@dataclass(frozen=True)
class ScheduleConfig:
    """`[schedule]`: opening hours and volume by time of day."""

    timezone: str = "local"
    """`local` (the box's clock) or an IANA zone name such as `Asia/Taipei`."""
    open: tuple[OpenPeriod, ...] = ()
    """Opening hours; empty: always open."""
    dim_when_closed: bool = True
    """Dim the screen and ignore buttons outside opening hours."""
    volume: tuple[VolumeStep, ...] = ()
    """Volume steps sorted by time; empty: `[audio] volume` all day. Before the first
    step of the day, the last step of the previous day applies."""


@dataclass(frozen=True)
class CacheConfig:
    """`[cache]`: how much the phrase caches may hold."""

    ram_mb: int = 256
    """RAM budget for decoded cached phrases, MB (0-65536; 0 reads each from disk)."""
    free_text_disk_mb: int = 512
    """Disk budget of the free-text LRU cache, MB (0-1048576; 0 disables it)."""


@dataclass(frozen=True)
class FreeTextConfig:
    """`[free_text]`: limits on what visitors may type for a free-text voice."""

    max_chars: int = 60
    """Longest text accepted (1-500 characters)."""
    blocklist: tuple[str, ...] = ()
    """Words refused in visitors' text."""
    blocklist_file: Path | None = None
    """A UTF-8 file with one blocked word per line (added to `blocklist`); None: none."""


@dataclass(frozen=True)
class ProvisioningConfig:
    """`[provisioning]`: installing voice packs from a USB stick on the box."""

    report_to_stick: bool = False
    """Write the install report back onto the stick."""
    backend: str = "auto"
    """Backend for the install-time health check (same names as `[backend] name`)."""


@dataclass(frozen=True)
class UiConfig:
    """`[ui]`: the touch screen and the frozen-screen watch."""

    idle_seconds: int = 90
    """Back to the start screen after this long without a touch (5-3600 s)."""
    heartbeat_seconds: int = 5
    """How often the page reports it is alive (1-60 s)."""
    heartbeat_timeout_seconds: int = 30
    """No heartbeat for this long: restart the browser (more than `heartbeat_seconds`)."""
    browser_unit: str = "kiosk-browser.service"
    """The systemd unit of the kiosk browser."""
    restart_command: tuple[str, ...] = ()
    """Command that restarts the browser; empty: `systemctl restart <browser_unit>`."""

    @property
    def browser_restart_command(self) -> tuple[str, ...]:
        """The command to run (the default one filled in with `browser_unit`)."""
        return self.restart_command or ("systemctl", "restart", self.browser_unit)


@dataclass(frozen=True)
class KioskConfig:
    """The whole file."""

    state_dir: Path = field(default_factory=lambda: default_state_dir(None))
    """The box's state folder; default `$KIOSK_STATE_DIR`, `$STATE_DIRECTORY` or
    `/var/lib/kiosk`."""
    web: WebConfig = WebConfig()
    """`[web]`."""
    audio: AudioConfig = AudioConfig()
    """`[audio]`."""
    backend: BackendConfig = BackendConfig()
    """`[backend]`."""
    buttons: tuple[ButtonConfig, ...] = ()
    """`[[button]]` tables, in file order."""
    gpio: GpioConfig = GpioConfig()
    """`[gpio]`."""
    schedule: ScheduleConfig = ScheduleConfig()
    """`[schedule]`."""
    cache: CacheConfig = CacheConfig()
    """`[cache]`."""
    free_text: FreeTextConfig = FreeTextConfig()
    """`[free_text]`."""
    provisioning: ProvisioningConfig = ProvisioningConfig()
    """`[provisioning]`."""
    ui: UiConfig = UiConfig()
    """`[ui]`."""
    source: str = "<defaults>"
    """Where this came from (the file's path, or `<defaults>`), for logs and the health page."""

    def button_when_playing(self, button: ButtonConfig) -> str:
        """The policy of one button (its own, else `[audio] when_playing`)."""
        return button.when_playing or self.audio.when_playing


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigIssue:
    """One mistake: the key's path, what is allowed there, what was found."""

    key: str
    allowed: str
    found: str

    def __str__(self) -> str:
        return f"{self.key}: expected {self.allowed}; found {self.found}"


class ConfigError(ValueError):
    """The config file is wrong; the message names the file and every bad key."""

    def __init__(self, source: str, issues: Sequence[ConfigIssue]) -> None:
        self.source = source
        self.issues = tuple(issues)
        if len(self.issues) == 1:
            text = f"{source}: {self.issues[0]}"
        else:
            lines = "\n".join(f"  {issue}" for issue in self.issues)
            text = f"{source}: {len(self.issues)} errors:\n{lines}"
        super().__init__(text + "\n(fix the file; `kiosk config check FILE` checks it)")


def _describe(value: Any) -> str:
    """How a found value is shown: the value and its TOML type."""
    kinds = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "table",
    }
    kind = next((name for cls, name in kinds.items() if isinstance(value, cls)), None)
    if kind is None:
        kind = type(value).__name__
    if isinstance(value, dict):
        return f"a table with keys {sorted(value)}"
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, str):
        shown = repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    else:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
    return f"{shown} ({kind})"


_MISSING = object()


class _Table:
    """One TOML table being read: takes keys one by one, then reports the unknown ones."""

    def __init__(self, issues: list[ConfigIssue], raw: Mapping[str, Any], where: str) -> None:
        self.issues = issues
        self.raw = raw
        self.where = where
        self.seen: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self.where} .{key}" if self.where else key

    def error(self, key: str, allowed: str, value: Any) -> None:
        self.issues.append(ConfigIssue(self.key_path(key), allowed, _describe(value)))

    def take(
        self,
        key: str,
        default: Any,
        allowed: str,
        check: Callable[[Any], Any],
    ) -> Any:
        """The key's value passed through `check` (which raises ValueError to refuse it)."""
        self.seen.add(key)
        value = self.raw.get(key, _MISSING)
        if value is _MISSING:
            return default
        try:
            return check(value)
        except ValueError:
            self.error(key, allowed, value)
            return default

    def required(self, key: str, allowed: str, check: Callable[[Any], Any]) -> Any:
        self.seen.add(key)
        if key not in self.raw:
            self.issues.append(ConfigIssue(self.key_path(key), allowed, "nothing (missing)"))
            return None
        return self.take(key, None, allowed, check)

    def boolean(self, key: str, default: bool) -> bool:
        return self.take(key, default, "true or false", _is(bool))

    def integer(self, key: str, default: int, low: int, high: int, unit: str = "") -> int:
        return self.take(key, default, f"an integer {low}-{high}{unit}", _int_in(low, high))

    def number(self, key: str, default: float, low: float, high: float, unit: str = "") -> float:
        return self.take(key, default, f"a number {low:g}-{high:g}{unit}", _num_in(low, high))

    def choice(self, key: str, default: Any, choices: Sequence[str]) -> Any:
        return self.take(key, default, _one_of(choices), _choice(choices))

    def text(self, key: str, default: Any, allowed: str = "a non-empty string") -> Any:
        return self.take(key, default, allowed, _nonempty)

    def finish(self) -> None:
        for key in self.raw:
            if key not in self.seen:
                known = ", ".join(sorted(self.seen)) or "none"
                self.issues.append(
                    ConfigIssue(self.key_path(key), f"a known key ({known})", "an unknown key")
                )


def _one_of(choices: Sequence[str]) -> str:
    return "one of " + ", ".join(f'"{c}"' for c in choices)


def _is(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ValueError
        return value

    return check


def _int_in(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError
        return value

    return check


def _num_in(low: float, high: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError
        if not low <= value <= high:
            raise ValueError
        return float(value)

    return check


def _choice(choices: Sequence[str]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError
        return value

    return check


def _nonempty(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    return value


def _ident(value: Any) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError
    return value


_ID_ALLOWED = "an id of lower-case letters, digits, '-' and '_' (at most 64)"


def _time(value: Any) -> dt.time:
    if isinstance(value, dt.time):  # TOML's own local time, 09:00:00
        return value.replace(second=0, microsecond=0)
    if not isinstance(value, str) or not (m := _TIME.fullmatch(value)):
        raise ValueError
    return dt.time(int(m[1]), int(m[2]))


def _days(value: Any) -> tuple[int, ...]:
    """`"mon-fri"`, `"sat,sun"`, `"tue"`, `"fri-mon"` (wrapping) into weekday numbers."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    days: set[int] = set()
    for part in value.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError
        a = DAYS.index(first)
        b = DAYS.index(last) if last else a
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return tuple(sorted(days))


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError
    return tuple(value)


def _pin(value: Any) -> int | str:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int) and 0 <= value <= 255:
        return value
    if isinstance(value, str) and _PIN_NAME.fullmatch(value):
        return value
    raise ValueError


_PIN_ALLOWED = 'a pin number 0-255 or a pin name such as "GPIO17" or "BOARD11"'


def _sub_table(parent: _Table, key: str, where: str) -> _Table:
    """A sub-table (`[web]`, ...); absent is an empty one, a non-table is an error."""
    parent.seen.add(key)
    raw = parent.raw.get(key, {})
    if not isinstance(raw, dict):
        parent.error(key, f"a table ({where})", raw)
        raw = {}
    return _Table(parent.issues, raw, where)


def _table_list(parent: _Table, key: str, allowed: str) -> list[Any]:
    parent.seen.add(key)
    raw = parent.raw.get(key, [])
    if not isinstance(raw, list):
        parent.error(key, allowed, raw)
        return []
    return raw


# --------------------------------------------------------------------------- sections


def _web(t: _Table) -> WebConfig:
    d = WebConfig()
    host = t.text("host", d.host, "a host name or address")
    port = t.integer("port", d.port, 1, 65535)
    pin = t.take(
        "pin",
        d.pin,
        'a string of 4-12 digits in quotes (e.g. pin = "4821"), or "" to disable /tech',
        lambda v: v if isinstance(v, str) and (v == "" or _PIN_DIGITS.fullmatch(v)) else _bad(),
    )
    remote = t.boolean("allow_remote_tech", d.allow_remote_tech)
    t.finish()
    return WebConfig(host=host, port=port, pin=pin, allow_remote_tech=remote)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _bad() -> Any:
    raise ValueError


def _audio(t: _Table, base: Path | None) -> AudioConfig:
    d = AudioConfig()

    def output(value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError
        if value.startswith("capture:"):
            folder = value[len("capture:") :]
            if not folder.strip():
                raise ValueError
            return "capture:" + str(_resolve(Path(folder).expanduser(), base))
        return value

    def latency(value: Any) -> str | float:
        if value in ("low", "high"):
            return value
        return _num_in(0.001, 2.0)(value)

    audio = AudioConfig(
        output=t.take(
            "output",
            d.output,
            '"default", "null", a sound device name or index, or "capture:DIR"',
            output,
        ),
        sample_rate=t.integer("sample_rate", d.sample_rate, 8000, 192000, " Hz"),
        blocksize=t.integer("blocksize", d.blocksize, 32, 4096, " frames"),
        latency=t.take("latency", d.latency, '"low", "high" or seconds 0.001-2', latency),
        volume=t.number("volume", d.volume, 0.0, 1.0),
        gain_cap=t.number("gain_cap", d.gain_cap, 0.0, 1.0),
        fade_ms=t.number("fade_ms", d.fade_ms, 5.0, 10.0, " ms"),
        when_playing=t.choice("when_playing", d.when_playing, WHEN_PLAYING),
        realtime_priority=t.integer("realtime_priority", d.realtime_priority, 0, 99),
    )
    t.finish()
    return audio


def _backend(t: _Table) -> BackendConfig:
    name = t.choice("name", BackendConfig().name, BACKENDS)
    t.finish()
    return BackendConfig(name=name)


def _button(t: _Table, number: int) -> ButtonConfig | None:
    before = len(t.issues)
    name = t.take("name", f"button{number}", "a name of letters, digits, '-', '_'", _button_name)
    source = t.required("source", _one_of(BUTTON_SOURCES), _choice(BUTTON_SOURCES))
    voice = t.required("voice", _ID_ALLOWED, _ident)
    phrase = t.take("phrase", None, _ID_ALLOWED, _ident)
    archival = t.take("archival", None, "an archival recording id (a file stem)", _nonempty)
    pin = t.take("pin", None, _PIN_ALLOWED, _pin)
    device = t.text("device", None, "an input device path (/dev/input/...) or name")
    code = t.take(
        "code",
        None,
        'a key code name such as "KEY_A" or "BTN_TRIGGER", or a stick direction like "ABS_X-"',
        lambda v: v if isinstance(v, str) and _EVDEV_CODE.fullmatch(v) else _bad(),
    )
    key = t.take(
        "key",
        None,
        "one character",
        lambda v: v if isinstance(v, str) and len(v) == 1 and v.isprintable() else _bad(),
    )
    hold = t.take(
        "hold",
        None,
        _one_of((*HOLD_ACTIONS, "none")),
        lambda v: None if v == "none" else _choice(HOLD_ACTIONS)(v),
    )
    hold_seconds = t.number("hold_seconds", 1.5, 0.2, 10.0, " s")
    led = t.take("led", None, _PIN_ALLOWED, _pin)
    cooldown = t.integer("cooldown_ms", 300, 0, 10000, " ms")
    when_playing = t.choice("when_playing", None, WHEN_PLAYING)
    t.finish()

    # What each source needs, and nothing it cannot use.
    needs = {
        "gpio": ("pin",),
        "jetson": ("pin",),
        "evdev": ("device", "code"),
        "keyboard": ("key",),
    }
    given = {"pin": pin, "device": device, "code": code, "key": key}
    if source in needs:
        for k in needs[source]:
            if given[k] is None and k not in t.raw:
                t.issues.append(
                    ConfigIssue(
                        t.key_path(k),
                        f"a value ({_article(source)} {source} button needs it)",
                        "nothing",
                    )
                )
        for k, v in given.items():
            if v is not None and k not in needs[source]:
                takes = ", ".join(needs[source])
                t.error(k, f"no {k} on {_article(source)} {source} button (it takes {takes})", v)
        if led is not None and source not in ("gpio", "jetson"):
            t.error("led", "an LED only on a gpio or jetson button", led)
    if "phrase" not in t.raw and "archival" not in t.raw:
        t.issues.append(ConfigIssue(t.key_path("phrase"), "one of phrase or archival", "neither"))
    elif "phrase" in t.raw and "archival" in t.raw:
        t.issues.append(
            ConfigIssue(t.key_path("archival"), "one of phrase or archival, not both", "both")
        )
    if len(t.issues) > before:
        return None
    return ButtonConfig(
        name=name,
        source=source,
        voice=voice,
        phrase=phrase,
        archival=archival,
        pin=pin,
        device=device,
        code=code,
        key=key,
        hold=hold,
        hold_seconds=hold_seconds,
        led=led,
        cooldown_ms=cooldown,
        when_playing=when_playing,
    )


def _button_name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", value):
        raise ValueError
    return value


def _buttons(top: _Table) -> tuple[ButtonConfig, ...]:
    raw = _table_list(top, "button", "[[button]] tables")
    buttons: list[ButtonConfig] = []
    for number, entry in enumerate(raw, start=1):
        where = f"[[button]] #{number}"
        if not isinstance(entry, dict):
            top.issues.append(ConfigIssue(where, "a table", _describe(entry)))
            continue
        button = _button(_Table(top.issues, entry, where), number)
        if button is not None:
            buttons.append(button)
    # Clashes between buttons: one name, one key, one pin each.
    seen: dict[tuple[str, Any], int] = {}
    for number, button in enumerate(buttons, start=1):
        hw = "gpio" if button.source in ("gpio", "jetson") else button.source
        claims = [("name", "name", button.name)]
        if button.key is not None:
            claims.append(("key", "key", button.key))
        if button.pin is not None:
            claims.append(("pin", hw, button.pin))
        if button.led is not None:
            claims.append(("led", hw, button.led))
        if button.code is not None:
            claims.append(("code", f"evdev:{button.device}", button.code))
        for key, space, value in claims:
            ident = (space if key not in ("pin", "led") else f"{space}-pin", value)
            if ident in seen:
                top.issues.append(
                    ConfigIssue(
                        f"[[button]] #{number} .{key}",
                        f"a {key} no other button uses",
                        f"{_describe(value)}, already used by [[button]] #{seen[ident]}",
                    )
                )
            else:
                seen[ident] = number
    return tuple(buttons)


def _gpio(t: _Table) -> GpioConfig:
    d = GpioConfig()
    gpio = GpioConfig(
        pin_factory=t.text("pin_factory", d.pin_factory, "a gpiozero pin factory name"),
        pull_up=t.boolean("pull_up", d.pull_up),
        bounce_ms=t.integer("bounce_ms", d.bounce_ms, 0, 1000, " ms"),
    )
    t.finish()
    return gpio


def _timezone(value: Any) -> str:
    if value == "local":
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError from exc
    return value


def _schedule(t: _Table) -> ScheduleConfig:
    d = ScheduleConfig()
    timezone = t.take(
        "timezone", d.timezone, '"local" or an IANA zone name such as "Asia/Taipei"', _timezone
    )
    periods: list[OpenPeriod] = []
    for n, entry in enumerate(_table_list(t, "open", "a list of {days, from, to} tables"), 1):
        where = f"[schedule] .open #{n}"
        if not isinstance(entry, dict):
            t.issues.append(ConfigIssue(where, "a table {days, from, to}", _describe(entry)))
            continue
        e = _Table(t.issues, entry, where)
        before = len(t.issues)
        days = e.required("days", 'days such as "mon-sun", "mon-fri" or "sat,sun"', _days)
        start = e.required("from", 'a time "HH:MM" (24-hour)', _time)
        end = e.required("to", 'a time "HH:MM" (24-hour)', _time)
        e.finish()
        if start is not None and end is not None and end == start:
            # `to` before `from` is a span past midnight (20:00-02:00), which the
            # schedule handles; an empty span is a mistake.
            e.error("to", f"a time other than from ({start:%H:%M})", entry["to"])
        if len(t.issues) == before:
            periods.append(OpenPeriod(days=days, start=start, end=end))
    dim = t.boolean("dim_when_closed", d.dim_when_closed)
    steps: list[VolumeStep] = []
    for n, entry in enumerate(_table_list(t, "volume", "a list of {from, volume} tables"), 1):
        where = f"[schedule] .volume #{n}"
        if not isinstance(entry, dict):
            t.issues.append(ConfigIssue(where, "a table {from, volume}", _describe(entry)))
            continue
        e = _Table(t.issues, entry, where)
        before = len(t.issues)
        start = e.required("from", 'a time "HH:MM" (24-hour)', _time)
        volume = e.required("volume", "a number 0-1", _num_in(0.0, 1.0))
        e.finish()
        if start is not None and any(s.start == start for s in steps):
            e.error("from", "a time no other volume step uses", f"{start:%H:%M}")
        if len(t.issues) == before:
            steps.append(VolumeStep(start=start, volume=volume))
    t.finish()
    return ScheduleConfig(
        timezone=timezone,
        open=tuple(periods),
        dim_when_closed=dim,
        volume=tuple(sorted(steps, key=lambda s: s.start)),
    )


def _cache(t: _Table) -> CacheConfig:
    d = CacheConfig()
    cache = CacheConfig(
        ram_mb=t.integer("ram_mb", d.ram_mb, 0, 65536, " MB"),
        free_text_disk_mb=t.integer("free_text_disk_mb", d.free_text_disk_mb, 0, 1 << 20, " MB"),
    )
    t.finish()
    return cache


def _free_text(t: _Table, base: Path | None) -> FreeTextConfig:
    d = FreeTextConfig()

    def blocklist_file(value: Any) -> Path | None:
        if value == "":
            return None
        if not isinstance(value, str):
            raise ValueError
        path = _resolve(Path(value).expanduser(), base)
        if not path.is_file():
            raise ValueError
        return path

    free = FreeTextConfig(
        max_chars=t.integer("max_chars", d.max_chars, 1, 500, " characters"),
        blocklist=t.take("blocklist", d.blocklist, "a list of non-empty strings", _str_list),
        blocklist_file=t.take(
            "blocklist_file",
            d.blocklist_file,
            'the path of an existing file (one word a line), or ""',
            blocklist_file,
        ),
    )
    t.finish()
    return free


def _provisioning(t: _Table) -> ProvisioningConfig:
    d = ProvisioningConfig()
    prov = ProvisioningConfig(
        report_to_stick=t.boolean("report_to_stick", d.report_to_stick),
        backend=t.choice("backend", d.backend, BACKENDS),
    )
    t.finish()
    return prov


def _ui(t: _Table) -> UiConfig:
    d = UiConfig()
    ui = UiConfig(
        idle_seconds=t.integer("idle_seconds", d.idle_seconds, 5, 3600, " s"),
        heartbeat_seconds=t.integer("heartbeat_seconds", d.heartbeat_seconds, 1, 60, " s"),
        heartbeat_timeout_seconds=t.integer(
            "heartbeat_timeout_seconds", d.heartbeat_timeout_seconds, 2, 3600, " s"
        ),
        browser_unit=t.text("browser_unit", d.browser_unit, "a systemd unit name"),
        restart_command=t.take(
            "restart_command",
            d.restart_command,
            'a command as a list of strings, e.g. ["systemctl", "restart", "kiosk-browser"]',
            _str_list,
        ),
    )
    if ui.heartbeat_timeout_seconds <= ui.heartbeat_seconds:
        t.error(
            "heartbeat_timeout_seconds",
            f"more than heartbeat_seconds ({ui.heartbeat_seconds})",
            ui.heartbeat_timeout_seconds,
        )
    t.finish()
    return ui


def _resolve(path: Path, base: Path | None) -> Path:
    return path if path.is_absolute() or base is None else base / path


# --------------------------------------------------------------------------- entry points


def parse_config(
    text: str, source_name: str = "<text>", *, base: Path | None = None
) -> KioskConfig:
    """Validate TOML text; `base` is the folder relative paths are resolved against.

    Raises ConfigError listing every mistake found.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            source_name, [ConfigIssue("(the file)", "valid TOML", f"a syntax error: {exc}")]
        ) from exc
    issues: list[ConfigIssue] = []
    top = _Table(issues, raw, "")
    state = top.take(
        "state_dir",
        None,
        "a folder path",
        lambda v: _resolve(Path(_nonempty(v)).expanduser(), base),
    )
    config = KioskConfig(
        state_dir=state if state is not None else default_state_dir(None),
        web=_web(_sub_table(top, "web", "[web]")),
        audio=_audio(_sub_table(top, "audio", "[audio]"), base),
        backend=_backend(_sub_table(top, "backend", "[backend]")),
        buttons=_buttons(top),
        gpio=_gpio(_sub_table(top, "gpio", "[gpio]")),
        schedule=_schedule(_sub_table(top, "schedule", "[schedule]")),
        cache=_cache(_sub_table(top, "cache", "[cache]")),
        free_text=_free_text(_sub_table(top, "free_text", "[free_text]"), base),
        provisioning=_provisioning(_sub_table(top, "provisioning", "[provisioning]")),
        ui=_ui(_sub_table(top, "ui", "[ui]")),
        source=source_name,
    )
    top.finish()
    if issues:
        raise ConfigError(source_name, issues)
    return config


def read_config_file(path: Path) -> KioskConfig:
    """Read and validate one file (it must exist)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            str(path),
            [ConfigIssue("(the file)", "a readable file", f"an error: {exc.strerror}")],
        ) from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            str(path),
            [ConfigIssue("(the file)", f"at most {MAX_CONFIG_BYTES} bytes", f"{len(data)} bytes")],
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), [ConfigIssue("(the file)", "UTF-8 text", f"bytes that are not ({exc})")]
        ) from exc
    return parse_config(text, str(path), base=path.parent.absolute())


def load_config(path: Path | None = None) -> KioskConfig:
    """The daemon's config: `path`, else $KIOSK_CONFIG, else /etc/kiosk/kiosk.toml.

    A missing file is an error when it was named; a missing default file means the
    built-in defaults (logged, so a technician sees why the box plays on `default`).
    """
    if path is not None:
        return read_config_file(Path(path))
    named = os.environ.get(CONFIG_ENV)
    if named:
        return read_config_file(Path(named))
    if not DEFAULT_CONFIG_PATH.exists():
        log.info("no %s: running on the built-in defaults", DEFAULT_CONFIG_PATH)
        return KioskConfig()
    return read_config_file(DEFAULT_CONFIG_PATH)


def summary(config: KioskConfig) -> list[str]:
    """A few lines saying what the config sets up (for `kiosk config check` and the log)."""
    a = config.audio
    lines = [
        f"state_dir {config.state_dir}",
        f"web {config.web.host}:{config.web.port}, /tech "
        + ("on" if config.web.pin else "off (no pin)"),
        f"audio output {a.output!r} at {a.sample_rate} Hz, block {a.blocksize}, "
        f"volume {a.volume:g} (cap {a.gain_cap:g}), fades {a.fade_ms:g} ms, "
        f"when playing: {a.when_playing}",
        f"backend {config.backend.name}",
        f"{len(config.buttons)} button(s)"
        + (
            ": "
            + ", ".join(
                f"{b.name} ({b.source}) -> {b.voice}/{b.phrase or b.archival}"
                for b in config.buttons
            )
            if config.buttons
            else ""
        ),
        "schedule: "
        + (
            f"{len(config.schedule.open)} opening period(s)"
            if config.schedule.open
            else "always open"
        )
        + f", {len(config.schedule.volume)} volume step(s), timezone {config.schedule.timezone}",
        f"cache {config.cache.ram_mb} MB RAM, free text {config.cache.free_text_disk_mb} MB disk",
        f"free text up to {config.free_text.max_chars} characters, "
        f"{len(config.free_text.blocklist)} blocked word(s)"
        + (f" + {config.free_text.blocklist_file}" if config.free_text.blocklist_file else ""),
    ]
    return lines
