"""Schedule: opening hours, volume steps, overnight spans, holidays, DST and clock jumps."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from appliance.config import OpenPeriod, ScheduleConfig, VolumeStep, parse_config
from appliance.schedule import HORIZON, Schedule, ScheduleError, ScheduleWatcher

UTC = dt.timezone.utc
TAIPEI = ZoneInfo("Asia/Taipei")
BERLIN = ZoneInfo("Europe/Berlin")
T = dt.time


def at(zone: dt.tzinfo, *args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zone)


def weekdays_9_to_5(**kw) -> ScheduleConfig:
    return ScheduleConfig(
        timezone="Asia/Taipei", open=(OpenPeriod((0, 1, 2, 3, 4), T(9), T(17)),), **kw
    )


def test_no_rules_means_always_open_at_the_default_volume() -> None:
    state = Schedule(ScheduleConfig(timezone="UTC"), default_volume=0.7).at(at(UTC, 2026, 5, 1))
    assert (state.open, state.volume, state.dim) == (True, 0.7, False)
    assert state.next_change == at(UTC, 2026, 5, 1) + HORIZON


def test_opening_hours_from_the_config_file() -> None:
    config = parse_config(
        '[schedule]\ntimezone = "Asia/Taipei"\n'
        'open = [{ days = "mon-fri", from = "09:00", to = "17:00" }]\n'
    )
    s = Schedule(config.schedule)
    # 2026-06-01 is a Monday
    before = s.at(at(TAIPEI, 2026, 6, 1, 8, 59))
    assert (before.open, before.dim) == (False, True)
    assert before.next_change == at(TAIPEI, 2026, 6, 1, 9, 0)
    assert s.at(at(TAIPEI, 2026, 6, 1, 9, 0)).open
    # the same instant given in UTC
    assert s.at(at(UTC, 2026, 6, 1, 1, 0)).open
    friday_close = s.at(at(TAIPEI, 2026, 6, 5, 17, 0))
    assert not friday_close.open
    assert friday_close.next_change == at(TAIPEI, 2026, 6, 8, 9, 0)  # over the weekend
    assert not s.at(at(TAIPEI, 2026, 6, 6, 12, 0)).open  # Saturday


def test_dim_only_when_asked() -> None:
    s = Schedule(weekdays_9_to_5(dim_when_closed=False))
    state = s.at(at(TAIPEI, 2026, 6, 1, 20, 0))
    assert not state.open and not state.dim


def test_overnight_span_and_two_day_sets() -> None:
    config = ScheduleConfig(
        timezone="Asia/Taipei",
        open=(OpenPeriod((4,), T(20), T(2)), OpenPeriod((5, 6), T(10), T(12))),
    )
    s = Schedule(config)
    assert s.at(at(TAIPEI, 2026, 6, 5, 21, 0)).open  # Friday evening
    late = s.at(at(TAIPEI, 2026, 6, 6, 1, 59))  # Saturday morning, same span
    assert late.open and late.next_change == at(TAIPEI, 2026, 6, 6, 2, 0)
    assert not s.at(at(TAIPEI, 2026, 6, 6, 2, 0)).open
    assert s.at(at(TAIPEI, 2026, 6, 6, 11, 0)).open  # "sat,sun" span
    assert not s.at(at(TAIPEI, 2026, 6, 6, 21, 0)).open  # Saturday is not an evening day
    assert not s.at(at(TAIPEI, 2026, 6, 4, 1, 0)).open  # Thursday morning


def test_volume_steps_wrap_around_midnight() -> None:
    config = ScheduleConfig(
        timezone="UTC",
        volume=(VolumeStep(T(9), 0.6), VolumeStep(T(12), 0.8), VolumeStep(T(20), 0.3)),
    )
    s = Schedule(config, default_volume=1.0)
    early = s.at(at(UTC, 2026, 6, 1, 8, 0))
    assert early.volume == 0.3  # the previous day's last step
    assert early.next_change == at(UTC, 2026, 6, 1, 9, 0)
    assert s.at(at(UTC, 2026, 6, 1, 10, 0)).volume == 0.6
    noon = s.at(at(UTC, 2026, 6, 1, 12, 0))
    assert noon.volume == 0.8 and noon.next_change == at(UTC, 2026, 6, 1, 20, 0)
    assert s.at(at(UTC, 2026, 6, 1, 23, 59)).volume == 0.3


def test_holidays_are_closed_all_day() -> None:
    s = Schedule(weekdays_9_to_5(), holidays=[dt.date(2026, 6, 19)])
    assert not s.at(at(TAIPEI, 2026, 6, 19, 10, 0)).open
    eve = s.at(at(TAIPEI, 2026, 6, 18, 17, 0))
    assert eve.next_change == at(TAIPEI, 2026, 6, 22, 9, 0)  # holiday Friday, then weekend


def test_spring_forward_follows_the_wall_clock() -> None:
    config = ScheduleConfig(
        timezone="Europe/Berlin", open=(OpenPeriod(tuple(range(7)), T(9), T(17)),)
    )
    s = Schedule(config)
    # 2026-03-29: 02:00 CET becomes 03:00 CEST; opening is 09:00 CEST = 07:00 UTC
    evening = s.at(at(BERLIN, 2026, 3, 28, 18, 0))
    assert evening.next_change == at(UTC, 2026, 3, 29, 7, 0)
    assert not s.at(at(UTC, 2026, 3, 29, 6, 59)).open
    assert s.at(at(UTC, 2026, 3, 29, 7, 0)).open


def test_a_step_inside_the_skipped_hour_starts_when_the_clock_jumps() -> None:
    config = ScheduleConfig(
        timezone="Europe/Berlin", volume=(VolumeStep(T(2, 30), 0.5), VolumeStep(T(12), 0.9))
    )
    s = Schedule(config)
    night = s.at(at(UTC, 2026, 3, 29, 0, 30))  # 01:30 CET
    assert night.volume == 0.9
    assert night.next_change == at(UTC, 2026, 3, 29, 1, 0)  # 02:00 CET -> 03:00 CEST
    assert s.at(at(UTC, 2026, 3, 29, 1, 0)).volume == 0.5


def test_fall_back_repeats_the_hour() -> None:
    config = ScheduleConfig(
        timezone="Europe/Berlin", volume=(VolumeStep(T(2, 30), 0.5), VolumeStep(T(12), 0.9))
    )
    s = Schedule(config)
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice
    moments = [at(UTC, 2026, 10, 25, 0, 0)]
    for _ in range(3):
        moments.append(s.at(moments[-1]).next_change)
    assert moments[1:] == [
        at(UTC, 2026, 10, 25, 0, 30),  # 02:30 CEST
        at(UTC, 2026, 10, 25, 1, 0),  # back to 02:00 CET
        at(UTC, 2026, 10, 25, 1, 30),  # 02:30 CET
    ]
    assert [s.at(m).volume for m in moments] == [0.9, 0.5, 0.9, 0.5]


def test_local_zone_and_naive_times(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Taipei")
    s = Schedule(ScheduleConfig(timezone="local", open=(OpenPeriod((0,), T(9), T(17)),)))
    assert s.tz.utcoffset(dt.datetime(2026, 6, 1)) == dt.timedelta(hours=8)
    assert s.at(at(UTC, 2026, 6, 1, 1, 0)).open  # 09:00 in Taipei
    with pytest.raises(ScheduleError, match="IANA"):
        Schedule(ScheduleConfig(timezone="Mars/Olympus"))


class Clocks:
    """A wall clock and a monotonic clock that a test moves, together or apart."""

    def __init__(self, wall: dt.datetime) -> None:
        self.now, self.mono = wall, 1000.0

    def tick(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)
        self.mono += seconds

    def set_wall(self, wall: dt.datetime) -> None:
        self.now = wall
        self.mono += 1.0


def watcher(clocks: Clocks) -> ScheduleWatcher:
    return ScheduleWatcher(
        Schedule(weekdays_9_to_5()), wall=lambda: clocks.now, monotonic=lambda: clocks.mono
    )


def test_watcher_reports_boot_boundaries_and_nothing_else() -> None:
    clocks = Clocks(at(TAIPEI, 2026, 6, 1, 8, 59, 58))
    w = watcher(clocks)
    boot = w.poll()
    assert boot is not None and boot.reason == "boot" and not boot.after.open
    clocks.tick(1)
    assert w.poll() is None
    clocks.tick(1)
    opened = w.poll()
    assert opened is not None and opened.reason == "schedule"
    assert opened.before is not None and not opened.before.open and opened.after.open
    clocks.tick(1)
    assert w.poll() is None


def test_watcher_catches_up_after_clock_jumps() -> None:
    # A box without a real-time clock boots in 1970, then NTP sets the time.
    clocks = Clocks(dt.datetime(1970, 1, 1, tzinfo=UTC))
    w = watcher(clocks)
    assert w.poll().reason == "boot"  # type: ignore[union-attr]
    clocks.set_wall(at(TAIPEI, 2026, 6, 1, 10, 0))
    jump = w.poll()
    assert jump is not None and jump.reason == "clock_jump" and jump.after.open
    assert jump.jump_seconds > 50 * 365 * 86400
    # ... and a jump backwards across closing time, within opening hours of nothing
    clocks.set_wall(at(TAIPEI, 2026, 6, 1, 8, 0))
    back = w.poll()
    assert back is not None and back.reason == "clock_jump" and not back.after.open
    assert back.jump_seconds == pytest.approx(-7201.0)
    clocks.tick(1)
    assert w.poll() is None
