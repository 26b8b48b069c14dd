"""Quieting third-party loggers for the length of one build step.

The ONNX exporters and ONNX Runtime's quantiser log every pass or node at
INFO: hundreds of lines per graph that bury the few a technician needs
("exported gpt_decode.onnx in 14 s").  Their warnings and errors still show.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quieted(*names: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise the named loggers to `level` inside the block, then restore them."""
    loggers = [logging.getLogger(name) for name in names]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, previous, strict=True):
            logger.setLevel(old)
