"""`kiosk stats [--csv] [--days N] [--state DIR]`: what the box played, for staff.

Reads `<state>/stats.sqlite3` read-only while the daemon may be writing it
(WAL lets both happen).  Without `--csv` it prints a short report: plays per
day, per voice, per phrase, per button, latency, and the latest errors.
"""

from __future__ import annotations

import argparse
import sys
import time

from appliance.stats import StatsReader, stats_path
from provisioning.state import state_dir

SUMMARY = "what the box played: plays per day, voice, phrase and button; latency; errors"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--csv", action="store_true", help="print one CSV row per day, voice, item and button"
    )
    parser.add_argument(
        "--days", type=int, default=None, metavar="N", help="the last N days (default: all)"
    )
    parser.add_argument(
        "--state",
        metavar="DIR",
        help="state folder (default $KIOSK_STATE_DIR, $STATE_DIRECTORY, /var/lib/kiosk)",
    )
    parser.set_defaults(func=run)


def _table(title: str, rows: list[dict], keys: tuple[str, ...], count: str = "plays") -> list[str]:
    """A blank line, the title, then one indented line per row (or "(none)")."""
    lines = ["", title]
    if not rows:
        return [*lines, "  (none)"]
    for r in rows:
        label = "  ".join("-" if r[k] is None else str(r[k]) for k in keys)
        lines.append(f"  {label:<48} {r[count]:>7}")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def report(reader: StatsReader, days: int | None) -> str:
    """The human-readable report `kiosk stats` prints."""
    window = "all days" if days is None else f"the last {days} day(s)"
    lat = reader.latency_summary(days)
    lines = [f"Stats in {reader.path} ({window})"]
    lines += _table("Plays per day", reader.plays_per_day(days), ("day",))
    lines += _table("Per voice", reader.plays_by(("voice", "version"), days), ("voice", "version"))
    by_item = reader.plays_by(("voice", "kind", "item"), days)
    lines += _table("Per phrase / archival clip", by_item, ("voice", "kind", "item"))
    by_button = reader.plays_by(("button", "source"), days)
    lines += _table("Per button", by_button, ("button", "source"))
    lines += _table("How plays ended", reader.plays_by(("outcome",), days), ("outcome",))
    lines += [
        "",
        f"Latency, press to sound: median {_ms(lat['p50_ms'])}, p99 {_ms(lat['p99_ms'])}, "
        f"max {_ms(lat['max_ms'])} over {lat['count']} plays",
    ]
    errors = reader.errors_per_day(days)
    lines += _table("Errors per day", errors, ("day", "component"), count="errors")
    recent = reader.errors(10)
    if recent:
        lines += ["", "Latest errors"]
        for e in recent:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"]))
            lines.append(f"  {when}  {e['component']}: {e['message']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.days is not None and args.days < 1:
        raise ValueError(f"--days must be 1 or more, not {args.days}")
    reader = StatsReader(stats_path(state_dir(args.state)))
    if args.csv:
        reader.export_csv(sys.stdout, args.days)
    else:
        print(report(reader, args.days))
    return 0
