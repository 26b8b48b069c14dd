"""`kiosk run` end to end: the real daemon as a subprocess, a real unix datagram socket as
$NOTIFY_SOCKET, the capture sink, gpiozero mock pins and evdev events driven inside the
daemon (appliance.dev_control), SIGHUP, SIGTERM, a hung synthesis, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from daemon_harness import REPO, SECOND_VOICE, VOICE, Box, Daemon, NotifyListener, provision

from appliance.phrase_cache import PhraseCache, read_index
from devtools.daemon_process import expected_capture

BUTTONS = f"""
[[button]]
name = "welcome"
source = "gpio"
pin = 17
voice = "{VOICE}"
phrase = "welcome"

[[button]]
name = "interview"
source = "evdev"
device = "Test encoder"
code = "KEY_A"
voice = "{VOICE}"
archival = "interview"
"""


def cached(state: Path, kind: str, item: str, rate: int = 48000, voice: str = VOICE) -> np.ndarray:
    """What the phrase cache holds for an item (read the way the daemon reads it)."""
    cache = PhraseCache(rate, 64 << 20)
    cache.add_version(voice, 1, state / "voices" / voice / "1" / "phrases")
    return cache.samples(voice, kind, item)


def assert_plays_exactly(daemon: Daemon, files_before: int, samples: np.ndarray) -> None:
    want = expected_capture(samples)
    files = daemon.captured(files_before + 1)
    got, rate = soundfile.read(str(files[files_before]), dtype="float32")
    assert rate == 48000
    np.testing.assert_array_equal(got[: want.size], want)
    assert got.size >= want.size and not np.any(got[want.size :])


@pytest.fixture(scope="module")
def daemon(kiosk_box: Box, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the module's tests (in order), with a phrase file damaged before start."""
    d = Daemon(kiosk_box, tmp_path_factory.mktemp("e2e"), buttons=BUTTONS)
    index = read_index(d.state / "voices" / VOICE / "1" / "phrases")
    song = next(i for i in index.items if i.id == "song")
    data = bytearray(song.path.read_bytes())
    data[len(data) // 2] ^= 0x55
    song.path.write_bytes(bytes(data))
    d.start()
    try:
        yield d
    finally:
        d.stop()


def test_ready_status_and_watchdog_pings(daemon: Daemon) -> None:
    assert daemon.notify is not None
    status = daemon.wait_ready()
    assert "1 voice(s) on torch-eager" in status and "DEGRADED" in status
    lines = daemon.notify.lines()
    ready = lines.index("READY=1")
    assert f"MAINPID={daemon.proc.pid}" in lines
    assert not any(line == "WATCHDOG=1" for line in lines[:ready])  # no pings before READY
    since = time.monotonic()
    daemon.notify.wait_for("WATCHDOG=1", 4.0, since)
    time.sleep(3.0)
    pings = sum(1 for line in daemon.notify.lines(since) if line == "WATCHDOG=1")
    assert pings >= 2  # every third of the 4 s watchdog timeout


def test_damaged_cache_file_and_unplugged_encoder_are_clear_and_the_rest_works(
    daemon: Daemon,
) -> None:
    health = daemon.get("/health")
    assert health["status"] == "degraded"
    text = " ".join(health["problems"])
    assert "song" in text and "damaged" in text
    assert "Test encoder" in text and "not found" in text
    voices = daemon.get("/api/voices")["voices"]
    assert [p["seconds"] is None for p in voices[0]["phrases"] if p["id"] == "song"] == [True]
    status, body = daemon.post("/api/play", {"voice": VOICE, "phrase": "song"})
    assert status == 404 and "song" in body["error"]


def test_gpio_press_plays_the_cached_phrase_exactly(daemon: Daemon) -> None:
    before = len(daemon.captured(0))
    daemon.press_gpio(17)
    assert_plays_exactly(daemon, before, cached(daemon.state, "synthetic", "welcome"))
    last = daemon.get("/health")["last_press"]
    assert last["source"] == "gpio" and last["button"] == "welcome"


def test_evdev_event_plays_the_mapped_recording_exactly(daemon: Daemon) -> None:
    time.sleep(0.4)  # past the previous press's cooldown
    before = len(daemon.captured(0))
    daemon.control({"evdev": "Test encoder", "type": "EV_KEY", "code": "KEY_A", "value": 1})
    daemon.control({"evdev": "Test encoder", "type": "EV_KEY", "code": "KEY_A", "value": 0})
    assert_plays_exactly(daemon, before, cached(daemon.state, "archival", "interview"))
    assert daemon.get("/health")["last_press"]["source"] == "evdev"


def read_events(url: str, count: int, out: list[tuple[str, dict]], ready: threading.Event) -> None:
    with urllib.request.urlopen(url, timeout=30) as stream:
        name = None
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                out.append((name, json.loads(line[6:])))
                if name == "status":
                    ready.set()
                if sum(1 for n, _ in out if n == "finished") >= count:
                    return


def test_events_stream_says_what_plays(daemon: Daemon) -> None:
    events: list[tuple[str, dict]] = []
    ready = threading.Event()
    reader = threading.Thread(
        target=read_events, args=(daemon.url + "/api/events", 1, events, ready), daemon=True
    )
    reader.start()
    assert ready.wait(10)
    status, body = daemon.post("/api/play", {"voice": VOICE, "phrase": "welcome"})
    assert status == 202
    reader.join(30)
    names = [n for n, _ in events]
    assert names[0] == "status" and "playing" in names and names[-1] == "finished"
    playing = next(d for n, d in events if n == "playing")
    assert playing["utterance"] == body["utterance"] and playing["phrase"] == "welcome"
    assert playing["kind"] == "synthetic" and playing["disclosure"]["en"]
    assert playing["label_en"] == "Welcome" and playing["seconds"] > 0
    assert events[-1][1]["reason"] == "done"


def test_sighup_picks_up_a_new_voice_and_keeps_the_old_config_when_the_new_is_bad(
    daemon: Daemon, kiosk_box: Box
) -> None:
    assert daemon.notify is not None
    good = daemon.config_path.read_text(encoding="utf-8")
    daemon.config_path.write_text(good + "\n[audio]\nvolume = 7\n", encoding="utf-8")
    since = time.monotonic()
    # provisioning a pack SIGHUPs the daemon named in <state>/kioskd.pid, as on a box
    provision(daemon.work, kiosk_box.keys, [kiosk_box.second_pack])
    daemon.notify.wait_for("RELOADING=1", 20, since)
    daemon.wait_until(
        lambda: SECOND_VOICE in {v["id"] for v in daemon.get("/api/voices")["voices"]},
        60,
        "the new voice listed",
    )
    health = daemon.get("/health")
    assert any("config not reloaded" in p for p in health["problems"])
    assert health["reloads"] >= 1
    status, body = daemon.post("/api/say", {"voice": SECOND_VOICE, "text": "你好"})
    assert status == 403 and "curated" in body["error"] and "listed phrases" in body["error"]
    before = len(daemon.captured(0))
    assert daemon.post("/api/play", {"voice": SECOND_VOICE, "phrase": "welcome"})[0] == 202
    daemon.captured(before + 1)
    daemon.config_path.write_text(good, encoding="utf-8")


def test_holding_a_next_voice_button_moves_it_to_the_next_voice(daemon: Daemon) -> None:
    """After the reload test the box has two voices; a hold switches the button between
    them (wrapping round), and a press then plays the other voice's phrase of the same id."""
    voices = {v["id"] for v in daemon.get("/api/voices")["voices"]}
    assert voices == {VOICE, SECOND_VOICE}, "runs after the reload test installed a second voice"
    assert daemon.notify is not None
    good = daemon.config_path.read_text(encoding="utf-8")
    holding = BUTTONS.replace(
        'phrase = "welcome"\n', 'phrase = "welcome"\nhold = "next_voice"\nhold_seconds = 0.3\n', 1
    )
    try:
        since = time.monotonic()
        daemon.write_config(buttons=holding)
        daemon.signal(signal.SIGHUP)
        daemon.notify.wait_for("RELOADING=1", 20, since)
        daemon.notify.wait_for("READY=1", 20, since)
        for playing, switched_to in ((VOICE, SECOND_VOICE), (SECOND_VOICE, VOICE)):  # and back
            before = len(daemon.captured(0))
            daemon.press_gpio(17, hold=0.8)  # the press plays, the hold switches
            assert_plays_exactly(
                daemon, before, cached(daemon.state, "synthetic", "welcome", voice=playing)
            )
            daemon.wait_until(
                lambda v=switched_to: f"welcome now plays voice {v}" in daemon.log(),
                10,
                "the switch",
            )
            daemon.press_gpio(17)
            assert_plays_exactly(
                daemon, before + 1, cached(daemon.state, "synthetic", "welcome", voice=switched_to)
            )
            # the two sample voices share their weights, so the file names tell them apart
            names = [f.name for f in daemon.captured(before + 2)[before:]]
            assert names[0].endswith(f"-{playing}-welcome.wav"), names
            assert names[1].endswith(f"-{switched_to}-welcome.wav"), names
    finally:
        since = time.monotonic()
        daemon.write_config(buttons=BUTTONS)
        daemon.signal(signal.SIGHUP)
        daemon.notify.wait_for("READY=1", 20, since)
        assert daemon.config_path.read_text(encoding="utf-8") == good


def test_hung_synthesis_stops_the_watchdog_pings(daemon: Daemon) -> None:
    assert daemon.notify is not None
    daemon.notify.wait_for("WATCHDOG=1", 4.0, time.monotonic())
    daemon.control({"fault": "synthesis-hang"})
    assert daemon.post("/api/say", {"voice": VOICE, "text": "你好"})[0] == 202
    stuck = daemon.notify.wait_for("STATUS=STUCK", 12.0, time.monotonic())
    assert "synthesis" in stuck
    after = time.monotonic()
    time.sleep(4.5)  # longer than the 4 s watchdog timeout: systemd would restart now
    assert "WATCHDOG=1" not in daemon.notify.lines(after)
    health = daemon.get("/health")  # the web still answers, and says why
    assert health["status"] == "degraded" and health["watchdog"]["stuck"]


def test_sigterm_stops_cleanly_within_5_seconds_even_with_a_hung_part(daemon: Daemon) -> None:
    """... and with an open event stream, which the shutdown ends."""
    assert daemon.notify is not None and daemon.proc is not None
    events: list[tuple[str, dict]] = []
    ready = threading.Event()
    reader = threading.Thread(
        target=read_events, args=(daemon.url + "/api/events", 99, events, ready), daemon=True
    )
    reader.start()
    assert ready.wait(10)
    start = time.monotonic()
    daemon.signal(signal.SIGTERM)
    code = daemon.proc.wait(10)
    assert time.monotonic() - start < 5.0 and code == 0
    reader.join(5)
    assert not reader.is_alive()  # the stream ended with the daemon
    assert "STOPPING=1" in daemon.notify.lines()
    assert not (daemon.state / "kioskd.pid").exists()


def test_bad_config_exits_with_a_clear_status(tmp_path: Path) -> None:
    config = tmp_path / "kiosk.toml"
    config.write_text('[audio]\nvolum = 0.5\n[web]\nport = "x"\n', encoding="utf-8")
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        run = subprocess.run(
            [sys.executable, "-m", "appliance.cli", "run", "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env={
                "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
                "PATH": "/usr/bin:/bin",
                "KIOSK_STATE_DIR": str(tmp_path / "state"),
            },
        )
        status = listener.wait_for("STATUS=", 5)
    finally:
        listener.close()
    assert run.returncode == 78
    assert "config error" in status and "kiosk.toml" in status
    assert "volum" in run.stderr and "port" in run.stderr
    assert "Traceback" not in run.stderr


def test_soak_short(kiosk_box: Box, tmp_path: Path) -> None:
    """The soak of devtools.soak, short: presses, web requests and reloads at once."""
    from devtools.soak import SOAK_BUTTONS, SOAK_CONFIG, soak

    d = Daemon(kiosk_box, tmp_path / "soak", buttons=SOAK_BUTTONS, extra_config=SOAK_CONFIG)
    d.start()
    try:
        result = soak(d, 1200, reload_every=2.0, warmup=200)
    finally:
        code = d.stop()
    assert code == 0
    assert result.ok, result.problems
    assert result.reloads >= 2 and result.web_requests > 50 and result.checked_files > 50


def test_log_goes_to_the_journal_with_priorities_under_systemd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    from appliance.journal_log import LogTail, setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    tail = LogTail(size=3)
    try:
        monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
        where = setup_logging(False, tail)
        assert where.startswith("journal")
        logging.getLogger("kiosk.test").warning("speaker\nunplugged")
        logging.getLogger("kiosk.test").info("ready")
        err = capsys.readouterr().err
        if where == "journal (stderr with priorities)":
            assert "<4>kiosk.test: speaker\n<4>unplugged\n<6>kiosk.test: ready" in err
        assert tail.tail(5)[-1].endswith("INFO kiosk.test: ready") and len(tail.tail(5)) == 2
        monkeypatch.delenv("JOURNAL_STREAM")
        monkeypatch.delenv("INVOCATION_ID", raising=False)
        assert setup_logging(False) == "stderr"
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_notifier_reaches_an_abstract_socket_and_the_supervisor_watches_probes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sdnotify's `@name` (abstract) sockets, UTF-8 status lines, and a dead audio
    callback (a probe whose last sign of life is old) stopping the pings."""
    import os
    import socket

    from appliance.notify import Notifier, listen, watchdog_seconds
    from appliance.supervisor import Supervisor

    name = f"@kiosk-test-{os.getpid()}"
    sock = listen(name)
    sock.settimeout(2)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        monkeypatch.setenv("WATCHDOG_USEC", "3000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        assert watchdog_seconds() == 3.0
        notifier = Notifier()
        assert notifier.enabled
        assert notifier.status("正在加载 voices")
        assert sock.recv(4096).decode() == "STATUS=正在加载 voices"
        supervisor = Supervisor(notifier, 0.1)
        seen = {"audio": time.monotonic()}
        supervisor.register_probe("audio", 1.0, lambda: seen["audio"])
        assert supervisor.tick() and sock.recv(4096) == b"WATCHDOG=1"
        seen["audio"] = time.monotonic() - 5  # the callback stopped being called
        assert not supervisor.tick()
        assert sock.recv(4096).decode().startswith("STATUS=STUCK: audio (5 s")
        with pytest.raises(socket.timeout):
            sock.settimeout(0.3)
            sock.recv(4096)  # no WATCHDOG=1 went out
        supervisor.register_probe("audio", 1.0, lambda: None)  # unplugged: its own status
        assert supervisor.tick() and sock.recv(4096) == b"WATCHDOG=1"
        monkeypatch.setenv("WATCHDOG_PID", "1")
        assert watchdog_seconds() is None  # another process's watchdog
    finally:
        sock.close()
