"""`kiosk config check FILE`: validate a config file without starting anything.

A technician (or the workstation, before a file goes onto a box) sees "ok" and
what the file sets up, or every mistake at once; the exit status is 2 on errors
so scripts can refuse a bad file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.config import read_config_file, summary

SUMMARY = "check a kiosk.toml config file (prints ok and a summary, or every error)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate FILE without starting the daemon")
    check.add_argument("file", metavar="FILE", help="the config file, e.g. /etc/kiosk/kiosk.toml")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Print "ok" and a summary; a ConfigError (a ValueError) ends in exit 2 via the CLI."""
    config = read_config_file(Path(args.file))
    print(f"ok: {config.source}")
    for line in summary(config):
        print(f"  {line}")
    return 0
