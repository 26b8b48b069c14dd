"""Loading the big tables a process keeps for life, without the cyclic collector.

The text frontend holds over a million small objects for its whole life
(jieba's prefix dictionary and tags, pypinyin's phrase readings), and the
engine's modules many more.  While they are built, the cyclic collector runs
again and again over everything made so far: it took 0.45 s of a voice's
boot, for nothing, since none of it is garbage.  Inside `permanent()` the
collector is off; afterwards everything alive is frozen (`gc.freeze`), so
later collections, including the daemon's for months, no longer walk it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def permanent() -> Iterator[None]:
    """Build long-lived tables with the collector off, then freeze what is alive."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


__all__ = ["permanent"]
