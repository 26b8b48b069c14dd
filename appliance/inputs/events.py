"""What every input source emits: one `InputEvent` per press, hold or release.

Sources know only their hardware; what a button does is the router's job, so
a GPIO pin, an arcade encoder's key and a keyboard key are the same thing to
everything after them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

InputAction = Literal["press", "hold", "release"]
#: The values `InputEvent.action` takes.
INPUT_ACTIONS: tuple[InputAction, ...] = ("press", "hold", "release")


@dataclass(frozen=True, slots=True)
class InputEvent:
    """One edge of one button, stamped when the source saw it."""

    source: str
    """The kind of source: `gpio`, `jetson`, `evdev`, `keyboard` (or `web`)."""
    button: str
    """The button's name from `[[button]] name`."""
    action: InputAction
    """`press` (down), `release` (up) or `hold` (a source that knows a hold itself,
    such as the keyboard's upper-case key); the router times holds of the others."""
    at_ns: int = field(default_factory=time.monotonic_ns)
    """`time.monotonic_ns()` when the edge was seen: the start of press-to-sound latency."""

    def __post_init__(self) -> None:
        if self.action not in INPUT_ACTIONS:
            raise ValueError(f"action must be one of {INPUT_ACTIONS}, not {self.action!r}")
