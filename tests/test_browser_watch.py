"""The frozen-screen watch: detection, the restart command (a stand-in script for the
browser unit, run for real), back-off, and the count in the stats."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from appliance.browser_watch import BrowserWatch, RestartResult, run_command


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Events:
    """Records what the watch stores (the `record_event` part of the stats)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def record_event(self, kind: str, detail: str = "") -> None:
        self.events.append((kind, detail))


def stand_in_unit(folder: Path, exit_status: int = 0) -> tuple[list[str], Path]:
    """A script standing in for `systemctl restart kiosk-browser.service`: it appends
    its arguments to a file, so the test sees each restart and what it was given."""
    marker = folder / "restarts.txt"
    script = folder / "fake-systemctl"
    script.write_text(
        "import sys\n"
        f"with open({str(marker)!r}, 'a') as f:\n"
        "    f.write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"print('stand-in unit restarted', file=sys.stderr)\n"
        f"sys.exit({exit_status})\n"
    )
    return [sys.executable, str(script), "restart", "kiosk-browser.service"], marker


def restarts(marker: Path) -> list[str]:
    return marker.read_text().splitlines() if marker.exists() else []


def test_beats_keep_the_browser_running_and_silence_restarts_it(tmp_path: Path) -> None:
    command, marker = stand_in_unit(tmp_path)
    clock, events = FakeClock(), Events()
    watch = BrowserWatch(10, command, events, clock)
    assert watch.status()["state"] == "waiting"
    for _ in range(5):
        clock.now += 6
        watch.beat("visitor")
        assert watch.check() is None
    assert watch.status()["state"] == "ok"
    assert restarts(marker) == []

    clock.now += 9.9
    assert watch.check() is None
    clock.now += 0.2
    result = watch.check()
    assert result is not None and result.returncode == 0
    assert "stand-in unit restarted" in result.message
    assert restarts(marker) == ["restart kiosk-browser.service"]
    assert events.events and events.events[0][0] == "browser_restart"
    assert "no heartbeat for 10 s" in events.events[0][1]
    status = watch.status()
    assert status["restarts"] == 1 and status["state"] == "restarting"
    assert status["last_restart"]["returncode"] == 0


def test_a_page_that_never_beats_counts_as_frozen(tmp_path: Path) -> None:
    command, marker = stand_in_unit(tmp_path)
    clock = FakeClock()
    watch = BrowserWatch(30, command, Events(), clock)
    clock.now += 29
    assert watch.check() is None
    clock.now += 2
    assert watch.check() is not None
    assert len(restarts(marker)) == 1


def test_back_off_doubles_and_gives_up_without_a_screen(tmp_path: Path) -> None:
    command, marker = stand_in_unit(tmp_path)
    clock, events = FakeClock(), Events()
    watch = BrowserWatch(10, command, events, clock, max_restarts=4, max_backoff_s=35)
    times = []
    for _ in range(400):  # 200 simulated seconds, a check every half second
        clock.now += 0.5
        if watch.check() is not None:
            times.append(clock.now - 1000)
    # Waits of 10, 20, 35 (capped), 35 s after each restart; then it gives up.
    assert times == [10, 30, 65, 100]
    assert len(restarts(marker)) == 4 and len(events.events) == 4
    assert watch.status()["state"] == "gave_up"
    assert watch.status()["next_restart_in_s"] is None

    # The screen comes back: everything is forgotten, the normal timeout applies again.
    watch.beat("visitor")
    assert watch.status()["state"] == "ok"
    clock.now += 10.5
    assert watch.check() is not None
    assert watch.status()["restarts"] == 5 and watch.status()["restarts_in_a_row"] == 1


def test_a_failing_unit_is_reported_and_backed_off(tmp_path: Path) -> None:
    command, _ = stand_in_unit(tmp_path, exit_status=5)
    clock, events = FakeClock(), Events()
    watch = BrowserWatch(5, command, events, clock)
    clock.now += 5
    result = watch.check()
    assert result is not None and result.returncode == 5
    assert result.message.startswith("exit status 5")
    clock.now += 5
    assert watch.check() is None  # backed off to 10 s
    clock.now += 5
    assert watch.check() is not None


def test_the_command_is_an_argv_list_never_a_shell(tmp_path: Path) -> None:
    touched = tmp_path / "pwned"
    result = run_command(["true; touch " + str(touched)])
    assert result.returncode is None and "command not found" in result.message
    assert not touched.exists()
    # Shell metacharacters in arguments are plain arguments.
    command, marker = stand_in_unit(tmp_path)
    run_command([*command, "$(touch x)", ";", "|"])
    assert restarts(marker) == ["restart kiosk-browser.service $(touch x) ; |"]


def test_the_technician_restart_is_counted_but_leaves_the_back_off(tmp_path: Path) -> None:
    command, marker = stand_in_unit(tmp_path)
    clock, events = FakeClock(), Events()
    watch = BrowserWatch(10, command, events, clock)
    watch.beat("visitor")
    clock.now += 5
    result = watch.restart_now("technician")
    assert result.returncode == 0 and restarts(marker) == ["restart kiosk-browser.service"]
    assert events.events == [("browser_restart", "asked for by the technician, " + result.message)]
    status = watch.status()
    assert status["restarts"] == 1 and status["restarts_in_a_row"] == 0
    clock.now += 9.5
    assert watch.check() is None  # the new page gets a full timeout from the restart


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="restart command is empty"):
        BrowserWatch(10, [], None)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        BrowserWatch(0, ["true"], None)


def test_stats_failure_does_not_stop_the_watch() -> None:
    class Broken:
        def record_event(self, kind: str, detail: str = "") -> None:
            raise RuntimeError("database is locked")

    clock = FakeClock()
    ran: list[list[str]] = []

    def runner(argv):
        ran.append(list(argv))
        return RestartResult("2026-01-01T00:00:00+00:00", 0, "restarted")

    watch = BrowserWatch(1, ["systemctl", "restart", "x"], Broken(), clock, runner=runner)
    clock.now += 1
    assert watch.check() is not None and ran == [["systemctl", "restart", "x"]]


def test_background_thread_restarts_in_real_time(tmp_path: Path) -> None:
    command, marker = stand_in_unit(tmp_path)
    watch = BrowserWatch(0.4, command, Events())
    watch.start(interval_s=0.05)
    try:
        for _ in range(8):  # beats keep it quiet
            watch.beat("visitor")
            time.sleep(0.1)
        assert restarts(marker) == []
        deadline = time.monotonic() + 10
        while not restarts(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(restarts(marker)) == 1
    finally:
        watch.stop()
