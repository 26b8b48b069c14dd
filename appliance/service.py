"""The service around the `Kiosk`: `run_daemon` (`kiosk run` / `kioskd`) and its web server.

Start order, for systemd's `Type=notify`: the config (a wrong file: exit 78
with a `STATUS=` line saying what is wrong), the kiosk (voices loaded and
warmed, audio stream open, inputs), the web server (waitress, listening), then
`READY=1`.  SIGHUP reloads in a thread, SIGTERM / SIGINT stop everything;
during the start a SIGTERM leaves at once.  The watchdog (`Supervisor`) pings
only while every part shows life, the web server included (a self-check
request every few seconds).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from appliance.config import load_config
from appliance.daemon import Kiosk
from appliance.journal_log import LogTail
from appliance.notify import Notifier

log = logging.getLogger("appliance.daemon")

#: Exit status for a config file that cannot be used (sysexits' EX_CONFIG).
EXIT_CONFIG = 78
#: Seconds between the web server's self-checks (a GET of /api/state over loopback).
WEB_CHECK_SECONDS = 5.0
WEB_STALL_SECONDS = 30.0


class _WebServer:
    """waitress in a thread, with a self-check the watchdog reads."""

    def __init__(self, kiosk: Kiosk, host: str, port: int) -> None:
        from waitress.server import create_server

        from appliance.api import WEB_THREADS, create_app

        self.kiosk = kiosk
        self.host, self.port = host, port
        self.server = create_server(
            create_app(kiosk),
            host=host,
            port=port,
            threads=WEB_THREADS,
            ident="kiosk",
            channel_timeout=30,
            clear_untrusted_proxy_headers=True,
        )
        self.port = int(self.server.effective_port)  # type: ignore[union-attr]
        self.thread = threading.Thread(target=self._serve, name="kiosk-web", daemon=True)
        self.last_ok = time.monotonic()
        self._stop = threading.Event()
        self._checker = threading.Thread(
            target=self._check_loop, name="kiosk-web-check", daemon=True
        )

    def _serve(self) -> None:
        try:
            self.server.run()
        except Exception:
            if not self._stop.is_set():
                log.exception("the web server stopped")

    def start(self) -> None:
        self.thread.start()
        self._checker.start()
        self.kiosk.supervisor.register_probe("web", WEB_STALL_SECONDS, lambda: self.last_ok)

    def _check_loop(self) -> None:
        import urllib.request

        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        url = f"http://{host}:{self.port}/api/state"
        while not self._stop.wait(WEB_CHECK_SECONDS):
            try:
                with urllib.request.urlopen(url, timeout=WEB_CHECK_SECONDS) as response:
                    response.read()
                self.last_ok = time.monotonic()
            except OSError as exc:
                log.warning("web self-check failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.server.close()
        with contextlib.suppress(Exception):
            self.server.task_dispatcher.shutdown(timeout=1)  # type: ignore[union-attr]


def run_daemon(config_path: Path | None = None, *, verbose: bool = False) -> int:
    """`kiosk run` / `kioskd`: start, say READY, serve until SIGTERM; returns the exit status.

    READY=1 comes after the voices are loaded and warmed, the audio stream is open and
    the web server listens; SIGHUP reloads the config and the voices in a thread (what
    plays goes on); SIGTERM or SIGINT stops everything within seconds.
    """
    import signal

    from appliance.config import ConfigError
    from appliance.journal_log import setup_logging

    tail = LogTail()
    where = setup_logging(verbose, tail)
    _limit_malloc_arenas()
    notifier = Notifier()
    log.info(
        "kioskd %d starting; log to %s, systemd notify via %s", os.getpid(), where, notifier.via
    )
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        first = str(exc).splitlines()[0]
        log.error("%s", exc)
        notifier.status(f"config error: {first[:300]}")
        return EXIT_CONFIG
    stop = threading.Event()
    ready = threading.Event()

    def on_stop(signum: int, _frame: Any) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()
        if not ready.is_set():
            # Still loading (which can take minutes on a first start): leave it now; the
            # `finally` below closes what was opened.
            raise SystemExit(0)

    kiosk = Kiosk(
        config,
        config_path=Path(config_path) if config_path else None,
        notifier=notifier,
        log_tail=tail,
    )
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, lambda *_: kiosk._reload_soon())
    pid_file = kiosk.state.pid_file
    web: _WebServer | None = None
    control = None
    try:
        kiosk.state.root.mkdir(parents=True, exist_ok=True)
        _write_pid(pid_file)
        kiosk.start()
        if stop.is_set():
            return 0
        from appliance.dev_control import start_if_asked

        control = start_if_asked(kiosk)
        web = _WebServer(kiosk, config.web.host, config.web.port)
        web.start()
        log.info("HTTP API on http://%s:%d", config.web.host, web.port)
        ready.set()
        notifier.ready(kiosk.status_line())
        log.info(
            "ready: %s (%.1f s after start)", kiosk.status_line(), time.monotonic() - kiosk.started
        )
        last_line = ""
        while not stop.wait(1.0):
            line = kiosk.status_line()
            if line != last_line and not kiosk.supervisor.stuck:
                notifier.status(line)
                last_line = line
        return 0
    except OSError as exc:
        log.error("kioskd cannot run: %s", exc)
        notifier.status(f"cannot start: {exc}")
        return 1
    finally:
        started = time.monotonic()
        notifier.stopping()
        if control is not None:
            control.close()
        if web is not None:
            web.close()
        kiosk.close()
        with contextlib.suppress(OSError):
            if pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()
        log.info("stopped in %.1f s", time.monotonic() - started)


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own heap arena (up to 8 per core); the
    daemon's threads (web server, sources, player, reloads) then each hold freed memory
    the others cannot reuse, and resident memory creeps up for hours (13 % in a 25 s
    soak).  Two arenas keep it flat; the audio callback allocates nothing either way."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    with contextlib.suppress(OSError, AttributeError):
        m_arena_max = -8  # from malloc.h
        ctypes.CDLL(name).mallopt(m_arena_max, arenas)


def _write_pid(path: Path) -> None:
    """`<state>/kioskd.pid`, so `kiosk provision` can SIGHUP the daemon after a change."""
    from engines.durable_files import atomic_write_bytes

    atomic_write_bytes(path, f"{os.getpid()}\n".encode())
