"""Stats: SQLite round trip, CSV, never blocking, damaged files, and a real SIGKILL."""

from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from appliance.cli import main as kiosk_main
from appliance.stats import CSV_COLUMNS, Stats, StatsError, StatsReader, percentile, stats_path

REPO = Path(__file__).resolve().parents[1]


def _fill(stats: Stats) -> None:
    now = time.time()
    for i in range(10):
        stats.record_play(
            voice="chen-ama",
            version=3,
            kind="phrase",
            item="welcome",
            button="red",
            source="gpio",
            latency_ms=10.0 + i,
            outcome="done" if i < 8 else "interrupted",
            ts=now,
        )
    stats.record_play(voice="chen-ama", version=3, kind="archival", item="song-1937",
                      source="web", latency_ms=100.0, outcome="stopped", ts=now)  # fmt: skip
    stats.record_play(voice="lin-agong", kind="text", item="a visitor's words", source="web",
                      latency_ms=400.0, ts=now)  # fmt: skip
    # two days ago
    stats.record_play(voice="chen-ama", version=2, kind="phrase", item="welcome", button="red",
                      source="gpio", latency_ms=12.0, ts=now - 2 * 86400)  # fmt: skip
    stats.record_error("audio", "device lost: USB Audio", ts=now)
    stats.record_event("browser_restart", "no heartbeat for 30 s", ts=now)


def test_round_trip(tmp_path: Path) -> None:
    with Stats(stats_path(tmp_path)) as stats:
        _fill(stats)
        assert stats.flush()
        today = time.strftime("%Y-%m-%d")
        per_day = stats.plays_per_day(7)
        assert per_day[-1] == {"day": today, "plays": 12}
        assert sum(r["plays"] for r in per_day) == 13
        assert stats.plays_per_day(1) == [{"day": today, "plays": 12}]
        by_item = {(r["voice"], r["kind"], r["item"]): r["plays"]
                   for r in stats.plays_by(("voice", "kind", "item"), days=1)}  # fmt: skip
        assert by_item == {
            ("chen-ama", "phrase", "welcome"): 10,
            ("chen-ama", "archival", "song-1937"): 1,
            ("lin-agong", "text", None): 1,  # a visitor's text is never stored
        }
        by_button = stats.plays_by(("button", "source"), days=None)
        assert {"button": "red", "source": "gpio", "plays": 11} in by_button
        lat = stats.latency_summary(1)
        values = [10.0 + i for i in range(10)] + [100.0, 400.0]
        assert lat["count"] == 12
        assert lat["p50_ms"] == pytest.approx(percentile(values, 0.5))
        assert lat["p99_ms"] == pytest.approx(percentile(values, 0.99))
        assert lat["max_ms"] == 400.0
        assert stats.errors(5)[0]["message"] == "device lost: USB Audio"
        assert stats.events(5)[0]["name"] == "browser_restart"
        assert stats.status()["ok"] and stats.status()["written"] == 15
        with pytest.raises(StatsError, match="group by"):
            stats.plays_by(("voice; DROP TABLE plays",))
        with pytest.raises(StatsError, match="kind"):
            stats.record_play(voice="x", kind="poem")
    # the writer committed everything; the database is a clean SQLite file
    con = sqlite3.connect(stats_path(tmp_path))
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_percentile() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.99) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile(list(map(float, range(101))), 0.99) == pytest.approx(99.0)


def test_csv_export_and_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Stats(stats_path(tmp_path)) as stats:
        _fill(stats)
        stats.flush()
        buf = io.StringIO()
        assert stats.export_csv(buf, days=1) == 3
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    welcome = next(r for r in rows if r["item"] == "welcome")
    assert (welcome["plays"], welcome["done"], welcome["interrupted"]) == ("10", "8", "2")
    assert float(welcome["latency_p50_ms"]) == pytest.approx(14.5)
    text = next(r for r in rows if r["kind"] == "text")
    assert text["item"] == "" and text["button"] == ""

    assert kiosk_main(["stats", "--csv", "--state", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    all_rows = list(csv.DictReader(io.StringIO(out)))
    assert sum(int(r["plays"]) for r in all_rows) == 13  # no --days: every day
    assert kiosk_main(["stats", "--days", "7", "--state", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    assert "Plays per day" in report and "welcome" in report
    assert "device lost: USB Audio" in report and "median" in report
    # no database yet: one clear line, exit 2
    assert kiosk_main(["stats", "--state", str(tmp_path / "empty")]) == 2
    assert "no stats yet" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    stats_path(bad).write_bytes(b"not a database" * 200)
    assert kiosk_main(["stats", "--state", str(bad)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_never_blocks_and_counts_drops(tmp_path: Path) -> None:
    path = stats_path(tmp_path)
    stats = Stats(path, max_queue=20)
    stats.record_event("start")
    assert stats.flush()
    # Another process-like writer holds the write lock: the writer thread waits in
    # its commit, the queue fills, callers still return at once.
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        start = time.perf_counter()
        for i in range(500):
            stats.record_play(voice="v", kind="phrase", item=str(i), source="keyboard")
        took = time.perf_counter() - start
        assert took < 0.5, f"recording waited on the disk: {took:.3f} s for 500 rows"
        assert stats.status()["dropped"] > 0
    finally:
        blocker.rollback()
        blocker.close()
    assert stats.flush(timeout=10)
    st = stats.status()
    assert st["written"] - 1 + st["dropped"] == 500
    assert len(stats.plays_by(("item",), None)) == st["written"] - 1
    stats.close()


def test_damaged_database_is_moved_aside(tmp_path: Path) -> None:
    path = stats_path(tmp_path)
    path.write_bytes(b"this is not a database, a power cut ate it" * 100)
    with Stats(path) as stats:
        st = stats.status()
        assert st["ok"], st
        assert "damaged" in st["detail"] and st["moved_aside"]
        assert Path(st["moved_aside"]).read_bytes().startswith(b"this is not")
        stats.record_play(voice="v", kind="phrase", item="p")
        stats.flush()
        assert stats.plays_per_day(1)[0]["plays"] == 1


def test_damage_while_running_starts_a_new_file(tmp_path: Path) -> None:
    path = stats_path(tmp_path)
    with Stats(path) as stats:
        stats.record_play(voice="v", kind="phrase", item="before")
        assert stats.flush()
        con = sqlite3.connect(path)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        path.write_bytes(os.urandom(path.stat().st_size))  # the card returns garbage
        stats.record_play(voice="v", kind="phrase", item="after")
        assert stats.flush()
        st = stats.status()
        assert st["ok"] and "damaged" in st["detail"] and st["moved_aside"], st
        assert [r["item"] for r in stats.plays_by(("item",), None)] == ["after"]
        assert st["dropped"] == 0


def test_unwritable_state_keeps_going(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "state"
    not_a_folder.write_text("a file where the state folder should be")
    stats = Stats(stats_path(not_a_folder))
    st = stats.status()
    assert not st["ok"] and "cannot write" in st["detail"] and "permissions" in st["detail"]
    stats.record_play(voice="v", kind="phrase", item="p")  # no exception: playing goes on
    assert stats.flush() and stats.status()["dropped"] == 1
    stats.close()


WRITER = textwrap.dedent(
    """
    import sys, time
    from appliance.stats import Stats
    stats = Stats(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:
        stats.record_play(voice="v", kind="phrase", item=str(i), source="gpio", ts=time.time())
        i += 1
        time.sleep(0.005)
    """
)


def test_power_cut_loses_at_most_the_last_second(tmp_path: Path) -> None:
    """SIGKILL a writer mid-stream: rows older than 1 s are all there, the file opens cleanly."""
    path = stats_path(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(1.6)
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = con.execute("SELECT item, ts FROM plays ORDER BY id").fetchall()
    con.close()
    items = [int(r[0]) for r in rows]
    assert items == list(range(len(items))), "committed rows are a gapless prefix"
    assert len(items) > 100
    newest = max(r[1] for r in rows)
    assert killed_at - newest < 1.0, f"lost {killed_at - newest:.2f} s of rows"
    # the daemon's next start opens it as it is (nothing moved aside) and reads it
    with Stats(path) as again:
        assert again.status()["moved_aside"] is None
        assert again.plays_per_day(1)[0]["plays"] == len(items)
    assert StatsReader(path).plays_per_day(None)[0]["plays"] == len(items)
