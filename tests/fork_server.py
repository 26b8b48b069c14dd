"""Real runs killed at chosen moments: the crash tests' forked-child server.

Starting a Python process that imports torch takes seconds, so a crash test
starts one server (`script`, given `args`) that has imported and loaded
everything, prints `ready`, and then, per request line, forks a child that
does one real run and prints the child's PID. The test may SIGKILL that PID
after a delay; it then writes `reap` and reads the child's wait status. Until
it is reaped the child stays a zombie, so the PID cannot be reused under the
kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


class ForkServer:
    """One server process; `run` does one (optionally killed) run through it."""

    def __init__(self, script: str, *args: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        assert self.stdout.readline() == "ready\n"

    def run(self, request: str, delay: float | None) -> int:
        """The wait status of one run of `request`, SIGKILLed after `delay` s (None: not)."""
        self.stdin.write(f"{request}\n")
        self.stdin.flush()
        pid = int(self.stdout.readline())
        if delay is not None:
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
        self.stdin.write("reap\n")
        self.stdin.flush()
        return int(self.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
