"""Plays, errors and latency in SQLite, in the state folder (`<state>/stats.sqlite3`).

Why this shape:

- The daemon's threads (player callback, HTTP handlers, inputs) call
  `Stats.record_*` and must never wait on the SD card: a record is put on a
  bounded queue and returns at once.  When the queue is full the row is
  dropped and counted (`status()["dropped"]`), and a warning is logged.
- One writer thread owns the write connection and commits a batch at least
  every `commit_interval` seconds (0.25 s): rows queued more than a second ago
  are committed, so a power cut loses at most the last second.  The journal is
  WAL with `synchronous=FULL`: in WAL mode `NORMAL` leaves committed
  transactions to roll back after a power loss until the next checkpoint, FULL
  syncs the WAL at every commit, which is one small fsync per batch.
- A damaged database (not a database, failed `quick_check`, at start or
  while writing) is moved aside as `stats.sqlite3.damaged-<time>` and a new
  one is started; an unwritable one
  turns stats off with a status that says what to fix.  Either way playing
  goes on: stats are never a reason for silence.
- Visitors' free text is never stored: a `text` play keeps only its kind.

Readers (`StatsReader`, `kiosk stats`, the technician page) open their own
connections; WAL lets them read while the writer writes.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

log = logging.getLogger("kiosk.stats")

#: The file's name inside the state folder.
STATS_FILE = "stats.sqlite3"
#: What a play is of.
KINDS = ("phrase", "archival", "text")
#: How a play ended (the player's `finished` reasons, and `ignored` for a press
#: the `when_playing = "ignore"` policy dropped).
OUTCOMES = ("done", "interrupted", "stopped", "error", "ignored")
#: Columns `plays_by` may group by.
GROUP_COLUMNS = ("day", "voice", "version", "kind", "item", "button", "source", "outcome")
#: Columns of `export_csv`, one row per day x voice x version x kind x item x button x source.
CSV_COLUMNS = (
    "day",
    "voice",
    "version",
    "kind",
    "item",
    "button",
    "source",
    "plays",
    "done",
    "interrupted",
    "stopped",
    "error",
    "ignored",
    "latency_p50_ms",
    "latency_p99_ms",
)
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plays (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,            -- seconds since the epoch (UTC)
    day TEXT NOT NULL,           -- the box's local date, YYYY-MM-DD
    voice TEXT NOT NULL,
    version INTEGER,
    kind TEXT NOT NULL,          -- phrase | archival | text
    item TEXT,                   -- phrase id or archival id; NULL for free text
    button TEXT,                 -- the button's name; NULL for the touch screen
    source TEXT NOT NULL,        -- gpio | jetson | evdev | keyboard | web | tech
    latency_ms REAL,             -- press to first sound
    outcome TEXT NOT NULL        -- done | interrupted | stopped | error | ignored
);
CREATE INDEX IF NOT EXISTS plays_day ON plays (day);
CREATE TABLE IF NOT EXISTS errors (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    day TEXT NOT NULL,
    component TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    day TEXT NOT NULL,
    name TEXT NOT NULL,          -- e.g. browser_restart, watchdog, voice_reload
    detail TEXT NOT NULL
);
"""


class StatsError(ValueError):
    """A stats query or record that cannot be answered as asked (says what to change)."""


@dataclass(frozen=True)
class _Row:
    table: str
    values: tuple[Any, ...]


def _damaged(exc: sqlite3.Error) -> bool:
    """The file is not (or no longer) a sound database, as opposed to locked, full, read-only."""
    text = str(exc)
    return (
        not isinstance(exc, sqlite3.OperationalError) or "malformed" in text
    ) and "locked" not in text


def _local_day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def _first_day(days: int | None, today: dt.date | None = None) -> str | None:
    """The first day (YYYY-MM-DD) of a window of `days` days ending today; None = all."""
    if days is None:
        return None
    if days < 1:
        raise StatsError(f"days must be 1 or more, not {days}")
    today = today or dt.date.today()
    return (today - dt.timedelta(days=days - 1)).isoformat()


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) of `values`, linear between neighbours; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class StatsReader:
    """Queries over a stats database; opens a fresh read connection per query."""

    def __init__(self, path: str | Path, *, read_only: bool = True) -> None:
        self.path = Path(path)
        self._read_only = read_only

    def _connect(self) -> sqlite3.Connection:
        if self._read_only:
            if not self.path.exists():
                raise FileNotFoundError(
                    f"no stats yet at {self.path} (the daemon writes it after the first play)"
                )
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        else:
            con = sqlite3.connect(self.path, timeout=5)
        con.row_factory = sqlite3.Row
        return con

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        try:
            con = self._connect()
            try:
                return [dict(r) for r in con.execute(sql, tuple(params))]
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise StatsError(
                f"cannot read {self.path}: {exc} (read it as the daemon's user, or with sudo; "
                "a damaged file is moved aside when the daemon starts)"
            ) from exc

    def plays_per_day(self, days: int | None = 7) -> list[dict[str, Any]]:
        """[{"day", "plays"}] for the last `days` days that had plays, oldest first."""
        return self.plays_by(("day",), days=days)

    def plays_by(
        self, group: Sequence[str] = ("day", "voice"), days: int | None = 7
    ) -> list[dict[str, Any]]:
        """Play counts grouped by any of GROUP_COLUMNS: [{...group, "plays"}], sorted by group."""
        group = tuple(group)
        bad = [c for c in group if c not in GROUP_COLUMNS]
        if bad or not group:
            raise StatsError(f"group by one or more of {', '.join(GROUP_COLUMNS)}, not {bad}")
        cols = ", ".join(group)
        first = _first_day(days)
        where = "WHERE day >= ?" if first else ""
        return self._query(
            f"SELECT {cols}, COUNT(*) AS plays FROM plays {where} GROUP BY {cols} ORDER BY {cols}",
            [first] if first else [],
        )

    def latency_summary(self, days: int | None = 7) -> dict[str, Any]:
        """{"count", "p50_ms", "p99_ms", "max_ms"} of press-to-sound latency."""
        first = _first_day(days)
        where = "AND day >= ?" if first else ""
        rows = self._query(
            f"SELECT latency_ms FROM plays WHERE latency_ms IS NOT NULL {where}",
            [first] if first else [],
        )
        values = [r["latency_ms"] for r in rows]
        return {
            "count": len(values),
            "p50_ms": percentile(values, 0.50),
            "p99_ms": percentile(values, 0.99),
            "max_ms": max(values) if values else None,
        }

    def errors(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest `limit` errors, newest first: [{"ts", "day", "component", "message"}]."""
        return self._query(
            "SELECT ts, day, component, message FROM errors ORDER BY id DESC LIMIT ?", [limit]
        )

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest `limit` events, newest first: [{"ts", "day", "name", "detail"}]."""
        return self._query(
            "SELECT ts, day, name, detail FROM events ORDER BY id DESC LIMIT ?", [limit]
        )

    def errors_per_day(self, days: int | None = 7) -> list[dict[str, Any]]:
        """[{"day", "component", "errors"}], oldest first."""
        first = _first_day(days)
        where = "WHERE day >= ?" if first else ""
        return self._query(
            f"SELECT day, component, COUNT(*) AS errors FROM errors {where} "
            "GROUP BY day, component ORDER BY day, component",
            [first] if first else [],
        )

    def export_csv(self, file: IO[str], days: int | None = None) -> int:
        """Write CSV_COLUMNS rows (one per day x voice x ... x source) to `file`; returns rows."""
        first = _first_day(days)
        where = "WHERE day >= ?" if first else ""
        keys = "day, voice, version, kind, item, button, source"
        rows = self._query(
            f"SELECT {keys}, outcome, latency_ms FROM plays {where} ORDER BY {keys}",
            [first] if first else [],
        )
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for r in rows:
            key = tuple(r[k] for k in CSV_COLUMNS[:7])
            groups.setdefault(key, []).append(r)
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for key, plays in groups.items():
            latencies = [p["latency_ms"] for p in plays if p["latency_ms"] is not None]
            counts = [sum(p["outcome"] == o for p in plays) for o in OUTCOMES]
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            writer.writerow(
                [
                    *("" if v is None else v for v in key),
                    len(plays),
                    *counts,
                    "" if p50 is None else f"{p50:.1f}",
                    "" if p99 is None else f"{p99:.1f}",
                ]
            )
        return len(groups)


class Stats(StatsReader):
    """The daemon's stats: records from any thread, one writer thread, never blocks.

    `Stats(path)` opens (or creates) the database and starts the writer;
    `close()` commits what is queued and stops it.  `status()` is for the
    technician page and /health.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        commit_interval: float = 0.25,
        max_queue: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < commit_interval <= 1.0:
            raise StatsError("commit_interval must be above 0 and at most 1 second")
        super().__init__(path, read_only=False)
        self._clock = clock
        self._interval = commit_interval
        self._queue: queue.Queue[_Row | threading.Event | None] = queue.Queue(max_queue)
        self._lock = threading.Lock()
        self._dropped = 0
        self._written = 0
        self._last_drop_log = 0.0
        self._ok = True
        self._detail = "recording"
        self._moved_aside: Path | None = None
        self._con = self._open()
        self._thread: threading.Thread | None = None
        if self._con is not None:
            self._thread = threading.Thread(target=self._writer, name="kiosk-stats", daemon=True)
            self._thread.start()

    # -- opening -----------------------------------------------------------

    def _open(self) -> sqlite3.Connection | None:
        try:
            return self._open_checked()
        except sqlite3.DatabaseError as exc:
            if _damaged(exc):
                return self._move_aside_and_reopen(str(exc))
            return self._disable(exc)
        except OSError as exc:
            return self._disable(exc)

    def _open_checked(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: opened here, used only by the writer thread after.
        con = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            check = con.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            con.execute("PRAGMA synchronous=FULL")
            con.executescript(_SCHEMA)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            con.commit()
        except BaseException:
            con.close()
            raise
        return con

    def _move_aside_and_reopen(self, why: str) -> sqlite3.Connection | None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(self._clock()))
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    os.replace(src, f"{aside}{suffix}")
            con = self._open_checked()
        except (OSError, sqlite3.Error) as exc:
            return self._disable(exc)
        with self._lock:
            self._moved_aside = aside
            self._ok = True
            self._detail = (
                f"the old database was damaged ({why}); moved to {aside.name}, started anew"
            )
        log.error("stats: %s", self._detail)
        return con

    def _disable(self, exc: BaseException) -> None:
        self._ok = False
        self._detail = (
            f"cannot write {self.path}: {exc}; plays are not counted until the state folder "
            "is writable (check the disk and its permissions, then restart the daemon)"
        )
        log.error("stats: %s", self._detail)
        return None

    # -- recording (any thread, never blocks) -------------------------------

    def _put(self, table: str, values: tuple[Any, ...]) -> None:
        if self._con is None:
            with self._lock:
                self._dropped += 1
            return
        try:
            self._queue.put_nowait(_Row(table, values))
        except queue.Full:
            with self._lock:
                self._dropped += 1
                dropped = self._dropped
                now = time.monotonic()
                should_log = now - self._last_drop_log > 10
                if should_log:
                    self._last_drop_log = now
            if should_log:
                log.warning("stats: queue full, %d rows dropped so far", dropped)

    def record_play(
        self,
        *,
        voice: str,
        kind: str,
        item: str | None = None,
        version: int | None = None,
        button: str | None = None,
        source: str = "web",
        latency_ms: float | None = None,
        outcome: str = "done",
        ts: float | None = None,
    ) -> None:
        """Count one play (call when it ends, with the player's reason as `outcome`)."""
        if kind not in KINDS:
            raise StatsError(f"kind must be one of {KINDS}, not {kind!r}")
        if outcome not in OUTCOMES:
            raise StatsError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        ts = self._clock() if ts is None else ts
        item = None if kind == "text" else item  # a visitor's text is never stored
        self._put(
            "plays",
            (ts, _local_day(ts), voice, version, kind, item, button, source, latency_ms, outcome),
        )

    def record_error(self, component: str, message: str, ts: float | None = None) -> None:
        """Count one error of a part of the daemon (audio, synthesis, browser, ...)."""
        ts = self._clock() if ts is None else ts
        self._put("errors", (ts, _local_day(ts), component, message[:2000]))

    def record_event(self, name: str, detail: str = "", ts: float | None = None) -> None:
        """Note one event a technician may ask about (browser restart, watchdog, voice reload)."""
        ts = self._clock() if ts is None else ts
        self._put("events", (ts, _local_day(ts), name, detail[:2000]))

    # -- the writer ---------------------------------------------------------

    _INSERT: ClassVar[dict[str, str]] = {
        "plays": "INSERT INTO plays (ts, day, voice, version, kind, item, button, source, "
        "latency_ms, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "errors": "INSERT INTO errors (ts, day, component, message) VALUES (?, ?, ?, ?)",
        "events": "INSERT INTO events (ts, day, name, detail) VALUES (?, ?, ?, ?)",
    }

    def _writer(self) -> None:
        con: sqlite3.Connection | None = self._con
        stop = False
        while not stop:
            batch: list[_Row] = []
            waiters: list[threading.Event] = []
            item = self._queue.get()
            deadline = time.monotonic() + self._interval
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    batch.append(item)
                if stop or waiters:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            # drain whatever else is already there (cheap, keeps batches whole)
            while not stop:
                try:
                    extra = self._queue.get_nowait()
                except queue.Empty:
                    break
                if extra is None:
                    stop = True
                elif isinstance(extra, threading.Event):
                    waiters.append(extra)
                else:
                    batch.append(extra)
            if batch and con is not None:
                con = self._commit(con, batch)
            elif batch:
                self._lost(batch, None)
            for w in waiters:
                w.set()
        if con is not None:
            con.close()

    def _insert(self, con: sqlite3.Connection, batch: list[_Row]) -> None:
        with con:
            for row in batch:
                con.execute(self._INSERT[row.table], row.values)

    def _commit(self, con: sqlite3.Connection, batch: list[_Row]) -> sqlite3.Connection | None:
        """Write one batch; returns the connection to go on with (a new one after the
        file was found damaged and moved aside), or None when stats had to stop."""
        try:
            self._insert(con, batch)
        except sqlite3.Error as exc:
            if _damaged(exc):
                con.close()
                new = self._move_aside_and_reopen(str(exc))
                if new is None:
                    self._con = None
                    self._lost(batch, None)
                    return None
                self._con = con = new
                try:
                    self._insert(con, batch)
                except sqlite3.Error as again:
                    self._lost(batch, again)
                    return con
            else:
                self._lost(batch, exc)
                return con
        with self._lock:
            self._written += len(batch)
            if not self._ok and self._con is not None:
                self._ok = True
                self._detail = "recording again after a write error"
        return con

    def _lost(self, batch: list[_Row], exc: sqlite3.Error | None) -> None:
        with self._lock:
            self._dropped += len(batch)
            if exc is not None:
                self._ok = False
                hint = "free space" if "full" in str(exc) else "the disk and its permissions"
                self._detail = (
                    f"writing {self.path} failed: {exc}; {len(batch)} rows lost "
                    f"(check {hint} of the state folder)"
                )
        if exc is not None:
            log.error("stats: %s", self._detail)

    # -- control ------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every row recorded before this call is committed; False on timeout."""
        if self._thread is None or not self._thread.is_alive():
            return self._con is None
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is queued and stop the writer (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)
        self._thread = None

    def status(self) -> dict[str, Any]:
        """{"ok", "detail", "path", "written", "dropped", "pending", "moved_aside"}."""
        with self._lock:
            return {
                "ok": self._ok,
                "detail": self._detail,
                "path": str(self.path),
                "written": self._written,
                "dropped": self._dropped,
                "pending": self._queue.qsize(),
                "moved_aside": str(self._moved_aside) if self._moved_aside else None,
            }

    def __enter__(self) -> Stats:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stats_path(state: str | Path) -> Path:
    """Where the stats of a state folder live."""
    return Path(state) / STATS_FILE
