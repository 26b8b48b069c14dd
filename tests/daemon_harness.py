"""The real daemon as a subprocess, for end-to-end tests (the daemon's, the touch UI's).

    def test_something(kiosk_daemon):                    # fixtures (tests/conftest.py)
        kiosk_daemon.get("/health")["status"]            # JSON over real HTTP
        kiosk_daemon.post("/api/play", {"voice": "chen-ama", "phrase": "welcome"})
        kiosk_daemon.captured(1)                         # the capture sink's WAVs

`kiosk_box` is a state folder provisioned for real, built once per session
(`devtools.daemon_process.build_box`: the tiny voice `chen-ama` with a free
text policy, a base pack with the tiny BERT, its cached phrases, and a second
signed curated pack `li-ye`, not installed, for reload tests).  `kiosk_daemon`
copies it, writes a config (capture sink, a free port, PIN 2468), starts
`kiosk run --config FILE` with a real unix datagram socket as $NOTIFY_SOCKET,
waits for READY=1 and stops it with SIGTERM after the test.  For other
buttons or settings, make a `Daemon(kiosk_box, folder, buttons=..., extra_config=...)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.daemon_process import (
    READY_TIMEOUT,
    REPO,
    SECOND_VOICE,
    VOICE,
    Box,
    Daemon,
    NotifyListener,
    build_box,
    free_port,
    provision,
)

__all__ = [
    "READY_TIMEOUT",
    "REPO",
    "SECOND_VOICE",
    "VOICE",
    "Box",
    "Daemon",
    "NotifyListener",
    "build_box",
    "free_port",
    "kiosk_box",
    "kiosk_daemon",
    "provision",
]


#: Development only: a folder where the session's box is kept between pytest runs
#: (built there on the first run); unset on CI, where every session builds its own.
BOX_CACHE_ENV = "KIOSK_TEST_BOX_CACHE"


@pytest.fixture(scope="session")
def kiosk_box(tmp_path_factory: pytest.TempPathFactory) -> Box:
    """The provisioned state folder, built once per test session (about a minute)."""
    cache = os.environ.get(BOX_CACHE_ENV)
    if cache:
        return Box.load(Path(cache)) if (Path(cache) / Box.RECORD).exists() else build_box(cache)
    return build_box(tmp_path_factory.mktemp("kiosk-box"))


@pytest.fixture
def kiosk_daemon(kiosk_box: Box, tmp_path: Path) -> Iterator[Daemon]:
    """A running daemon (READY) on a copy of the box's state; stopped after the test."""
    daemon = Daemon(kiosk_box, tmp_path / "daemon").start()
    try:
        yield daemon
    finally:
        daemon.stop()
