"""Where the daemon's log goes: the journal under systemd, stderr otherwise, and a RAM tail.

Under systemd ($JOURNAL_STREAM or $INVOCATION_ID is set) the records go to the
journal with their priority: through systemd-python's `JournalHandler` when it
is installed (with the logger name as a field), else as stderr lines prefixed
with `<N>` (sd-daemon's priority prefix, which the journal reads from a
service's stderr) and without a timestamp (the journal adds its own).  Run by
hand, the lines go to stderr with a timestamp.

`LogTail` keeps the last lines in RAM for the technician page
(`Kiosk.log_tail`), so the page needs no access to the journal.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading

#: syslog priorities of Python's levels (what the journal shows as colours and filters by).
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


class _PriorityFormatter(logging.Formatter):
    """`<N>name: message` lines for a service's stderr that the journal reads."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 2 if record.levelno > logging.ERROR else 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines() or [""])


class LogTail(logging.Handler):
    """The last `size` formatted log lines, for the technician page."""

    def __init__(self, size: int = 2000) -> None:
        super().__init__(logging.INFO)
        self._lines: collections.deque[str] = collections.deque(maxlen=size)
        self._lock2 = threading.Lock()
        self.setFormatter(logging.Formatter(PLAIN_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a bad log call must not break the caller
            return
        with self._lock2:
            self._lines.append(line)

    def tail(self, lines: int) -> list[str]:
        with self._lock2:
            items = list(self._lines)
        return items[-lines:] if lines > 0 else []


def setup_logging(verbose: bool = False, tail: LogTail | None = None) -> str:
    """Route the root logger; returns where the log goes ("journal", "stderr")."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    where = "stderr"
    handler: logging.Handler
    if under_systemd():
        try:
            from systemd.journal import JournalHandler  # type: ignore[import-not-found]

            handler = JournalHandler(SYSLOG_IDENTIFIER="kioskd")
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            where = "journal"
        except ImportError:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_PriorityFormatter("%(name)s: %(message)s"))
            where = "journal (stderr with priorities)"
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    root.addHandler(handler)
    if tail is not None:
        root.addHandler(tail)
    return where
