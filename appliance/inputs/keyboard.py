"""The keyboard of a developer's terminal as buttons (`source = "keyboard"`).

A key press in the terminal the daemon runs in presses the button with that
`key`; the same letter in upper case (Shift) is a hold, for the button's
second action, since a terminal reports no key releases.  The terminal is put
in cbreak mode (keys arrive one by one, Ctrl-C still works) and restored on
close.  When stdin is not a terminal (the daemon under systemd reads
/dev/null) the source stays off and touches nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import sys
import termios
import threading
import time
import tty
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from appliance.inputs.base import Emit, StatusMixin
from appliance.inputs.events import InputEvent

if TYPE_CHECKING:
    from appliance.config import ButtonConfig


class KeyboardSource(StatusMixin):
    """Keys of a terminal (stdin unless `stream` is given) mapped to button names."""

    kind = "keyboard"

    def __init__(self, buttons: Sequence[ButtonConfig], *, stream: IO[Any] | int | None = None):
        self.keys = {b.key: b.name for b in buttons if b.key}
        self._stream = stream
        self._init_status("keyboard", [b.name for b in buttons])
        self._fd: int | None = None
        self._saved: list[Any] | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._emit: Emit | None = None

    def _fileno(self) -> int | None:
        stream = sys.stdin if self._stream is None else self._stream
        if isinstance(stream, int):
            return stream
        try:
            return stream.fileno()
        except (AttributeError, OSError, ValueError):
            return None

    def start(self, emit: Emit) -> None:
        self._emit = emit
        fd = self._fileno()
        if fd is None or not os.isatty(fd):
            self._set_status(
                False, "stdin is not a terminal, keyboard buttons are off (run kiosk run in one)"
            )
            return
        self._fd = fd
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        atexit.register(self._restore)  # the terminal comes back even if close() is missed
        self._thread = threading.Thread(target=self._run, name="kiosk-keyboard", daemon=True)
        self._thread.start()
        keys = ", ".join(f"{k}={n}" for k, n in self.keys.items())
        self._set_status(True, f"keys {keys} (upper case: hold)")

    def handle_key(self, char: str) -> None:
        """One character typed: a press and release, or (upper case of a key) a hold."""
        if self._emit is None:
            return
        now = time.monotonic_ns()
        if char in self.keys:
            name = self.keys[char]
            self._emit(InputEvent("keyboard", name, "press", now))
            self._emit(InputEvent("keyboard", name, "release", now))
        elif char.lower() in self.keys and char != char.lower():
            self._emit(InputEvent("keyboard", self.keys[char.lower()], "hold", now))

    def _run(self) -> None:
        assert self._fd is not None
        sel = selectors.DefaultSelector()
        sel.register(self._fd, selectors.EVENT_READ, "key")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    data = os.read(self._fd, 64)
                    if not data:
                        self._set_status(False, "the terminal closed; keyboard buttons are off")
                        return
                    for char in data.decode("utf-8", "replace"):
                        self.handle_key(char)
        except OSError as exc:
            self._set_status(False, f"reading the terminal failed ({exc}); keyboard off")
        finally:
            sel.close()

    def set_led(self, button: str, on: bool) -> bool:
        return False

    def _restore(self) -> None:
        if self._fd is not None and self._saved is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(3)
            self._thread = None
        self._restore()
        atexit.unregister(self._restore)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        self._set_status(False, "closed")
