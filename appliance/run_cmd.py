"""`kiosk run [--config FILE]` (also installed as `kioskd`): the daemon, for systemd.

The unit (`systemd/kioskd.service`) runs it as `Type=notify` with a watchdog;
run by hand it logs to stderr and ignores the notify protocol.  Everything it
does is in `appliance.service.run_daemon`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the config file (default $KIOSK_CONFIG, else /etc/kiosk/kiosk.toml)",
    )


def run(args: argparse.Namespace) -> int:
    from appliance.service import run_daemon

    code = run_daemon(
        Path(args.config) if args.config else None, verbose=bool(getattr(args, "verbose", False))
    )
    # Everything is closed and flushed by now; the interpreter's own teardown (torch,
    # thread pools, module finalisers) takes seconds on a small board and would push
    # the stop past systemd's TimeoutStopSec, so the process ends here.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """The `kioskd` console script: `kiosk run` without the `kiosk` front."""
    parser = argparse.ArgumentParser(prog="kioskd", description="Heritage Voice Kiosk daemon")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    add_arguments(parser)
    from engines.threads import configure_torch

    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    configure_torch()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
