"""The kiosk's cache folder: what is rebuilt from other files, kept across boots.

`$XDG_CACHE_HOME/kiosk` (the service unit sets XDG_CACHE_HOME to its
CacheDirectory=, /var/cache/kiosk), else `~/.cache/kiosk` for a technician's
shell.  Never the temporary folder: a service's private /tmp is empty at every
start, and rebuilding these costs seconds to minutes.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_folder(name: str) -> Path:
    """The kiosk's cache sub-folder `name` (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kiosk" / name


__all__ = ["cache_folder"]
