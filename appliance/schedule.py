"""Opening hours and volume by time of day, as a pure function of the time.

`Schedule(config.schedule).at(now)` says whether the box is open, which
volume applies, whether the screen should dim and when that next changes.
Because the answer depends only on `now`, there is nothing to catch up after
a boot or a clock jump: the daemon asks again and gets the state of the new
time.  `ScheduleWatcher` is the small loop part the daemon polls (about once
a second): it reports each change, the first state after boot, and clock jumps
(the wall clock moving against the monotonic clock, e.g. NTP fixing a box that
booted without a network), so the daemon can log them.

Rules:
- An open period `{days, from, to}` is open on each listed weekday from `from`
  (inclusive) to `to` (exclusive).  When `to` is not later than `from` the
  period runs past midnight (20:00 to 02:00): it starts on a listed day and ends
  on the next one.  No periods: always open.
- Volume steps: from each step's time on, its volume, until the next step;
  before the day's first step the last step of the previous day applies.  No
  steps: the default volume (`[audio] volume`).
- Times are wall-clock times in the schedule's zone (`local` is the box's own
  zone: $TZ, else /etc/localtime, else UTC).  Across a daylight-saving change
  a rule follows the wall clock: a period that opens at 09:00 opens at 09:00
  of the new offset.
- Holidays (optional dates) are closed all day.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from appliance.config import OpenPeriod, ScheduleConfig, VolumeStep

log = logging.getLogger("kiosk.schedule")

#: How far ahead `next_change` looks; beyond it the state is re-read anyway.
HORIZON = dt.timedelta(days=8)
#: Wall and monotonic clocks disagreeing by more than this between polls is a jump.
JUMP_SECONDS = 2.0


class ScheduleError(ValueError):
    """A schedule that cannot be used as given (says what to change)."""


def local_zone() -> dt.tzinfo:
    """The box's own zone: $TZ, else /etc/localtime, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            log.warning("TZ=%r is not a known zone; using /etc/localtime", name)
    localtime = Path("/etc/localtime")
    if localtime.exists():
        with localtime.open("rb") as f:
            return zoneinfo.ZoneInfo.from_file(f, key="localtime")
    return dt.timezone.utc


def zone(name: str) -> dt.tzinfo:
    """`local` or an IANA zone name as a tzinfo."""
    if name == "local":
        return local_zone()
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            f'unknown time zone {name!r}: use "local" or an IANA name such as "Asia/Taipei"'
        ) from exc


@dataclass(frozen=True)
class ScheduleState:
    """What the schedule says at one moment."""

    open: bool
    """Inside opening hours (buttons and the touch screen play)."""
    volume: float
    """The volume that applies now (a step's volume, or the default)."""
    dim: bool
    """Closed and `dim_when_closed`: the screen may dim."""
    next_change: dt.datetime
    """The next moment `open`, `volume` or `dim` changes (UTC), or `HORIZON` ahead."""

    def same_as(self, other: ScheduleState | None) -> bool:
        """Equal in what the daemon acts on (ignores `next_change`)."""
        return other is not None and (self.open, self.volume, self.dim) == (
            other.open,
            other.volume,
            other.dim,
        )


class Schedule:
    """Opening hours and volume steps of one `[schedule]`, evaluated at any time."""

    def __init__(
        self,
        config: ScheduleConfig,
        *,
        default_volume: float = 0.8,
        holidays: Iterable[dt.date] = (),
    ) -> None:
        self.config = config
        self.tz = zone(config.timezone)
        self.default_volume = float(default_volume)
        self.holidays = frozenset(holidays)
        self._offset_window: tuple[dt.datetime, dt.datetime, list[dt.datetime]] | None = None
        self._periods: tuple[OpenPeriod, ...] = tuple(config.open)
        self._steps: tuple[VolumeStep, ...] = tuple(sorted(config.volume, key=lambda s: s.start))
        for p in self._periods:
            if not p.days or any(not 0 <= d <= 6 for d in p.days):
                raise ScheduleError(f"open period days must be weekdays 0-6, not {p.days}")

    # -- the pure part -----------------------------------------------------

    def _aware(self, now: dt.datetime) -> dt.datetime:
        if now.tzinfo is None:  # a naive time is the box's wall clock
            now = now.astimezone()
        return now.astimezone(self.tz)

    def _is_open(self, local: dt.datetime) -> bool:
        if not self._periods:
            return True
        day, t = local.date(), local.time().replace(tzinfo=None, fold=0)
        if day in self.holidays:
            return False
        weekday = day.weekday()
        yesterday = (weekday - 1) % 7
        for p in self._periods:
            if p.start < p.end:
                if weekday in p.days and p.start <= t < p.end:
                    return True
            else:  # past midnight: the evening part today, the morning part of yesterday's
                if weekday in p.days and t >= p.start:
                    return True
                if yesterday in p.days and t < p.end:
                    return True
        return False

    def _volume(self, local: dt.datetime) -> float:
        if not self._steps:
            return self.default_volume
        t = local.time().replace(tzinfo=None, fold=0)
        current = self._steps[-1]  # before the first step: the previous day's last one
        for step in self._steps:
            if step.start <= t:
                current = step
        return current.volume

    def _core(self, when: dt.datetime) -> tuple[bool, float, bool]:
        local = self._aware(when)
        is_open = self._is_open(local)
        return is_open, self._volume(local), (not is_open) and self.config.dim_when_closed

    def _candidates(self, now: dt.datetime) -> list[dt.datetime]:
        """Moments (UTC) after `now` when the state may change, sorted."""
        local = self._aware(now)
        times = {dt.time(0, 0)}
        for p in self._periods:
            times.update((p.start, p.end))
        times.update(s.start for s in self._steps)
        found: set[dt.datetime] = set()
        first = local.date() - dt.timedelta(days=1)
        for n in range(HORIZON.days + 2):
            day = first + dt.timedelta(days=n)
            for t in times:
                for fold in (0, 1):  # a repeated hour holds the boundary twice
                    wall = dt.datetime.combine(day, t, tzinfo=self.tz).replace(fold=fold)
                    found.add(wall.astimezone(dt.timezone.utc))
        found.update(self._offset_changes_cached(now))
        utc_now = now.astimezone(dt.timezone.utc)
        return sorted(c for c in found if c > utc_now)

    def _offset_changes_cached(self, now: dt.datetime) -> list[dt.datetime]:
        """`_offset_changes` over the horizon, from a window scanned once a month."""
        utc = now.astimezone(dt.timezone.utc)
        window = self._offset_window
        if window is None or not window[0] <= utc or utc + HORIZON > window[1]:
            start, end = utc - dt.timedelta(days=1), utc + HORIZON + dt.timedelta(days=30)
            window = self._offset_window = (start, end, self._offset_changes(start, end))
        return [c for c in window[2] if utc < c <= utc + HORIZON]

    def _offset_changes(self, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        """Instants (UTC, to the second) where the zone's UTC offset changes."""
        changes = []
        step = dt.timedelta(hours=1)
        t = start.astimezone(dt.timezone.utc)
        offset = t.astimezone(self.tz).utcoffset()
        while t < end:
            nxt = t + step
            off = nxt.astimezone(self.tz).utcoffset()
            if off != offset:
                low, high = t, nxt  # offset(low) == before, offset(high) == after
                while high - low > dt.timedelta(seconds=1):
                    mid = low + (high - low) / 2
                    if mid.astimezone(self.tz).utcoffset() == offset:
                        low = mid
                    else:
                        high = mid
                changes.append(high.replace(microsecond=0))
                offset = off
            t = nxt
        return changes

    def at(self, now: dt.datetime) -> ScheduleState:
        """The schedule's state at `now` (aware; a naive time is the box's wall clock)."""
        now = self._aware(now)
        core = self._core(now)
        next_change = now.astimezone(dt.timezone.utc) + HORIZON
        for c in self._candidates(now):
            if self._core(c) != core:
                next_change = c
                break
        return ScheduleState(open=core[0], volume=core[1], dim=core[2], next_change=next_change)


@dataclass(frozen=True)
class Transition:
    """A change `ScheduleWatcher.poll` reports."""

    reason: Literal["boot", "schedule", "clock_jump"]
    """`boot`: the first state; `schedule`: a boundary passed; `clock_jump`: the wall
    clock moved (by `jump_seconds`) and the state was read anew."""
    before: ScheduleState | None
    """The state before (None at boot)."""
    after: ScheduleState
    """The state now."""
    jump_seconds: float = 0.0
    """How far the wall clock jumped (positive: forwards)."""


class ScheduleWatcher:
    """Polled by the daemon (about once a second); says when the schedule's state changes.

    A clock jump is reported even when the state stays the same, so it lands
    in the log and the stats.
    """

    def __init__(
        self,
        schedule: Schedule,
        *,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
        monotonic: Callable[[], float] = time.monotonic,
        jump_seconds: float = JUMP_SECONDS,
    ) -> None:
        self.schedule = schedule
        self._wall = wall
        self._mono = monotonic
        self._jump = jump_seconds
        self.state: ScheduleState | None = None
        self._last: tuple[dt.datetime, float] | None = None

    def poll(self) -> Transition | None:
        """Read the clocks; a `Transition` when something changed, else None."""
        wall, mono = self._wall(), self._mono()
        jumped = 0.0
        if self._last is not None:
            wall_elapsed = (wall - self._last[0]).total_seconds()
            jumped = wall_elapsed - (mono - self._last[1])
        self._last = (wall, mono)
        before = self.state
        state = self.schedule.at(wall)
        self.state = state
        if before is None:
            return Transition("boot", None, state)
        if abs(jumped) > self._jump:
            log.warning("wall clock jumped %+.0f s; schedule read anew", jumped)
            return Transition("clock_jump", before, state, jump_seconds=jumped)
        if not state.same_as(before):
            return Transition("schedule", before, state)
        return None
