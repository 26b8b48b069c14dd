"""kiosk.toml: defaults, the example file, every kind of mistake, `kiosk config check`."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from appliance import config as cfg
from appliance.cli import main
from appliance.config import ConfigError, KioskConfig, load_config, parse_config, read_config_file

EXAMPLE = Path(__file__).resolve().parents[1] / "appliance" / "kiosk.example.toml"


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "k.toml")
    assert str(info.value).startswith("k.toml: ")
    return [str(i) for i in info.value.issues]


def test_empty_file_is_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIOSK_STATE_DIR", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    config = parse_config("", "empty.toml")
    assert config.state_dir == Path("/var/lib/kiosk")
    assert config.web == cfg.WebConfig() and config.audio.output == "default"
    assert config.buttons == () and config.schedule.open == ()
    assert config.ui.browser_restart_command == ("systemctl", "restart", "kiosk-browser.service")
    monkeypatch.setenv("KIOSK_STATE_DIR", "/srv/kiosk")
    assert parse_config("").state_dir == Path("/srv/kiosk")


def test_example_file_is_valid_and_shows_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    config = read_config_file(EXAMPLE)
    assert config.source == str(EXAMPLE)
    defaults = KioskConfig()
    for section in ("web", "audio", "backend", "gpio", "schedule", "cache", "free_text", "ui"):
        assert getattr(config, section) == getattr(defaults, section), section
    assert config.provisioning == defaults.provisioning
    assert config.state_dir == Path("/var/lib/kiosk")
    assert [(b.name, b.source, b.key, b.voice, b.phrase) for b in config.buttons] == [
        ("welcome", "keyboard", "1", "chen-ama", "welcome"),
        ("song", "keyboard", "2", "chen-ama", "song"),
    ]
    assert config.button_when_playing(config.buttons[0]) == "interrupt"
    assert config.button_when_playing(config.buttons[1]) == "queue"
    assert config.buttons[0].hold == "stop" and config.buttons[1].hold is None
    # Every field of every dataclass has a line in the example (commented or set).
    text = EXAMPLE.read_text()
    for klass in (cfg.WebConfig, cfg.AudioConfig, cfg.GpioConfig, cfg.ScheduleConfig):
        for f in dataclasses.fields(klass):
            assert f"{f.name} =" in text, f.name


def test_backend_names_match_the_engines() -> None:
    from engines.backends.selection import AUTO, BACKEND_ORDER

    assert set(cfg.BACKENDS) == {AUTO, *BACKEND_ORDER}


def test_unknown_keys_are_errors() -> None:
    found = issues('colour = "red"\n[web]\nprot = 80\n[sound]\nx = 1\n')
    assert any(i.startswith("colour: expected a known key") for i in found)
    assert any(
        i.startswith("[web] .prot: expected a known key (allow_remote_tech, host, pin, port)")
        for i in found
    )
    assert any(i.startswith("sound: expected a known key") for i in found)
    assert len(found) == 3


def test_wrong_type_and_range_name_key_allowed_and_found() -> None:
    (one,) = issues('[web]\nport = "8080"\n')
    assert one == "[web] .port: expected an integer 1-65535; found '8080' (string)"
    (one,) = issues("[audio]\nvolume = 1.5\n")
    assert one == "[audio] .volume: expected a number 0-1; found 1.5 (number)"
    (one,) = issues("[audio]\nfade_ms = 20\n")
    assert "5-10 ms" in one and "20 (integer)" in one
    (one,) = issues("[web]\npin = 4821\n")
    assert "in quotes" in one and "4821 (integer)" in one
    (one,) = issues('[audio]\nwhen_playing = "skip"\n')
    assert '"interrupt", "queue", "ignore"' in one
    (one,) = issues("[cache]\nram_mb = true\n")
    assert "true (boolean)" in one
    (one,) = issues("web = 3\n")
    assert one.startswith("web: expected a table ([web])")


def test_several_errors_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            '[web]\nport = 0\n[audio]\nvolume = -1\noutput = ""\n[ui]\nidle_seconds = 1\n',
            "/etc/kiosk/kiosk.toml",
        )
    text = str(info.value)
    assert text.startswith("/etc/kiosk/kiosk.toml: 4 errors:")
    for key in ("[web] .port", "[audio] .volume", "[audio] .output", "[ui] .idle_seconds"):
        assert key in text
    assert "kiosk config check" in text
    assert isinstance(info.value, ValueError)


def test_buttons_shape_and_clashes() -> None:
    text = """
[[button]]
source = "gpio"
pin = 17
led = 27
voice = "chen-ama"
phrase = "welcome"

[[button]]
source = "gpio"
pin = true
voice = "chen-ama"
phrase = "song"

[[button]]
source = "keyboard"
key = "ab"
voice = "Chen Ama"
phrase = "x"
archival = "y"

[[button]]
source = "evdev"
device = "/dev/input/event3"
voice = "chen-ama"
archival = "song-1962"

[[button]]
source = "jetson"
pin = 27
voice = "chen-ama"
phrase = "welcome"
hold = "explode"
"""
    found = issues(text)
    assert any(i.startswith("[[button]] #2 .pin: expected a pin number 0-255") for i in found)
    assert any(
        i.startswith("[[button]] #3 .key: expected one character; found 'ab'") for i in found
    )
    assert any(i.startswith("[[button]] #3 .voice: expected an id of lower-case") for i in found)
    assert any(
        i.startswith("[[button]] #3 .archival: expected one of phrase or archival, not both")
        for i in found
    )
    assert any(
        i.startswith("[[button]] #4 .code: expected a value (an evdev button needs it)")
        for i in found
    )
    assert any(i.startswith("[[button]] #5 .hold:") for i in found)
    assert len(found) == 6

    ok = parse_config(
        """
[[button]]
source = "gpio"
pin = 17
led = 27
voice = "chen-ama"
phrase = "welcome"
hold = "next_voice"

[[button]]
name = "second"
source = "gpio"
pin = "GPIO27"
voice = "chen-ama"
archival = "song-1962"
hold = "none"
cooldown_ms = 0
"""
    )
    first, second = ok.buttons
    assert (first.name, first.pin, first.led, first.hold, first.hold_seconds) == (
        "button1",
        17,
        27,
        "next_voice",
        1.5,
    )
    assert (second.name, second.pin, second.archival, second.hold) == (
        "second",
        "GPIO27",
        "song-1962",
        None,
    )

    clash = issues(
        """
[[button]]
source = "gpio"
pin = 17
led = 27
voice = "a"
phrase = "b"
[[button]]
source = "jetson"
pin = 27
voice = "a"
phrase = "c"
[[button]]
source = "keyboard"
key = "1"
name = "button1"
voice = "a"
phrase = "c"
"""
    )
    assert any(
        i.startswith("[[button]] #2 .pin: expected a pin no other button uses")
        and "[[button]] #1" in i
        for i in clash
    )
    assert any(
        i.startswith("[[button]] #3 .name: expected a name no other button uses") for i in clash
    )
    assert len(clash) == 2
    (one,) = issues('[[button]]\nsource = "keyboard"\nkey = "1"\nvoice = "a"\n')
    assert one.startswith("[[button]] #1 .phrase: expected one of phrase or archival")
    (one,) = issues(
        '[[button]]\nsource = "keyboard"\nkey = "1"\npin = 3\nvoice = "a"\nphrase = "b"\n'
    )
    assert one.startswith("[[button]] #1 .pin: expected no pin on a keyboard button")


def test_schedule_days_times_and_volume_steps() -> None:
    config = parse_config(
        """
[schedule]
timezone = "Asia/Taipei"
volume = [{ from = "12:00", volume = 0.8 }, { from = "09:00", volume = 0.5 }]

[[schedule.open]]
days = "fri-mon"
from = "09:30"
to = "17:00"

[[schedule.open]]  # TOML's own time works for `from` too
days = "wed,thu"
from = 10:00:00
to = "12:00"
"""
    )
    s = config.schedule
    assert s.timezone == "Asia/Taipei"
    assert s.open[0] == cfg.OpenPeriod(days=(0, 4, 5, 6), start=dt.time(9, 30), end=dt.time(17))
    assert s.open[1].days == (2, 3) and s.open[1].start == dt.time(10)
    assert [(v.start, v.volume) for v in s.volume] == [(dt.time(9), 0.5), (dt.time(12), 0.8)]

    found = issues(
        """
[schedule]
timezone = "Mars/Olympus"
open = [
  { days = "mon-fry", from = "25:00", to = "17:00" },
  { days = "mon", from = "18:00", to = "18:00" },
  { days = "fri", from = "20:00", to = "02:00" },
  { days = "sun" },
]
volume = [{ from = "09:00", volume = 0.5 }, { from = "09:00", volume = 0.6, loud = true }]
"""
    )
    expected = [
        "[schedule] .timezone:",
        "[schedule] .open #1 .days:",
        "[schedule] .open #1 .from: expected a time \"HH:MM\" (24-hour); found '25:00'",
        "[schedule] .open #2 .to: expected a time other than from (18:00); found '18:00'",
        '[schedule] .open #4 .from: expected a time "HH:MM" (24-hour); found nothing (missing)',
        "[schedule] .open #4 .to:",
        "[schedule] .volume #2 .loud: expected a known key",
        "[schedule] .volume #2 .from: expected a time no other volume step uses",
    ]
    for start in expected:
        assert any(i.startswith(start) for i in found), start
    assert len(found) == len(expected)


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "blocked.txt").write_text("badword\n", encoding="utf-8")
    path = tmp_path / "kiosk.toml"
    path.write_text(
        'state_dir = "state"\n[audio]\noutput = "capture:out/wav"\n'
        '[free_text]\nblocklist_file = "blocked.txt"\nblocklist = ["x"]\n',
        encoding="utf-8",
    )
    config = read_config_file(path)
    assert config.state_dir == tmp_path / "state"
    assert config.audio.output == f"capture:{tmp_path / 'out' / 'wav'}"
    assert config.free_text.blocklist_file == tmp_path / "blocked.txt"
    assert config.free_text.blocklist == ("x",)
    path.write_text('[free_text]\nblocklist_file = "missing.txt"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[free_text\] \.blocklist_file: expected the path"):
        read_config_file(path)


def test_file_level_errors(tmp_path: Path) -> None:
    (one,) = issues("[web\nport = 1\n")
    assert one.startswith("(the file): expected valid TOML; found a syntax error")
    with pytest.raises(ConfigError, match="readable file"):
        read_config_file(tmp_path / "nope.toml")
    (tmp_path / "latin1.toml").write_bytes(b'state_dir = "\xe9"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        read_config_file(tmp_path / "latin1.toml")


def test_load_config_path_env_and_missing_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "k.toml"
    path.write_text("[web]\nport = 9000\n", encoding="utf-8")
    assert load_config(path).web.port == 9000
    monkeypatch.setenv("KIOSK_CONFIG", str(path))
    assert load_config(None).web.port == 9000
    monkeypatch.setenv("KIOSK_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError):
        load_config(None)  # a named file must exist
    monkeypatch.delenv("KIOSK_CONFIG")
    monkeypatch.setattr(cfg, "DEFAULT_CONFIG_PATH", tmp_path / "etc" / "kiosk.toml")
    with caplog.at_level("INFO", logger="appliance.config"):
        assert load_config(None).source == "<defaults>"
    assert "built-in defaults" in caplog.text


def test_kiosk_config_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {EXAMPLE}\n")
    assert "2 button(s): welcome (keyboard) -> chen-ama/welcome" in out
    assert "audio output 'default' at 48000 Hz" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[web]\nport = "x"\n[[button]]\nsource = "gpio"\nvoice = "a"\nphrase = "b"\n')
    assert main(["config", "check", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"kiosk config: {bad}: 2 errors:" in captured.err
    assert "[[button]] #1 .pin: expected a value (a gpio button needs it)" in captured.err


def test_a_span_past_midnight_and_a_stick_direction_are_allowed() -> None:
    config = parse_config(
        """
[schedule]
open = [{ days = "fri", from = "20:00", to = "02:00" }]

[[button]]
name = "left"
source = "evdev"
device = "/dev/input/by-id/usb-arcade-event-joystick"
code = "ABS_X-"
voice = "chen-ama"
phrase = "welcome"
""",
        "kiosk.toml",
    )
    period = config.schedule.open[0]
    assert (period.start.hour, period.end.hour) == (20, 2)
    assert config.buttons[0].code == "ABS_X-"
