"""The audio path: player on the capture sink (exact samples, fades, policies, streams,
gain cap), the callback's no-allocation rule, the paced null sink, and sounddevice on
ALSA's null device and on a missing device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from appliance.audio.alsa_null import ALSA_NULL_DEVICE, write_alsa_null_config
from appliance.audio.outputs import (
    CaptureOutput,
    NullOutput,
    SoundDeviceOutput,
    make_output,
    safe_label,
)
from appliance.audio.player import QUIET, Clip, Player, PlayerEvent
from appliance.audio.resample import StreamResampler, resample

RATE = 48000
BLOCK = 256
FADE = round(RATE * 8 / 1000)  # 384 frames
REPO = Path(__file__).resolve().parents[1]


def tone(seconds: float, amp: float = 0.5, freq: float = 220.0, quiet_ends: bool = True):
    """A sine; with quiet ends it starts and ends at zero (like a cached phrase)."""
    n = int(seconds * RATE)
    x = (amp * np.sin(2 * np.pi * freq * np.arange(n) / RATE)).astype(np.float32)
    if quiet_ends:  # a 10 ms rise and fall, as speech has
        ramp = np.sin(np.linspace(0.0, np.pi / 2, 480, dtype=np.float32)) ** 2
        x[:480] *= ramp
        x[-480:] *= ramp[::-1]
        x[0] = x[-1] = 0.0
    return x


class Rig:
    """A started player on a capture sink running 8x real time, with its events."""

    def __init__(self, folder: Path, **player_args) -> None:
        self.output = CaptureOutput(folder, sample_rate=RATE, blocksize=BLOCK, speed=8)
        self.events: list[PlayerEvent] = []
        self.player = Player(self.output, on_event=self.events.append, **player_args)
        self.player.start()

    def files(self, count: int) -> list[np.ndarray]:
        assert self.player.wait_idle(10)
        paths = self.output.wait_for_files(count)
        assert len(paths) == count, paths
        return [soundfile.read(p, dtype="float32")[0] for p in paths]

    def of(self, kind: str) -> list[PlayerEvent]:
        return [e for e in self.events if e.kind == kind]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path / "capture")
    yield r
    r.player.close()


def max_step(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x, prepend=0.0, append=0.0)).max())


def test_resample_before_play() -> None:
    x = tone(0.5)
    assert resample(x, RATE, RATE) is x
    y = resample(tone(1.0)[:32000], 32000, RATE)
    assert y.dtype == np.float32 and y.shape == (48000,)
    stream = StreamResampler(32000, RATE)
    src = tone(1.0)[:32000]
    parts = [stream.process(src[i : i + 3000]) for i in range(0, 32000, 3000)]
    joined = np.concatenate([*parts, stream.process(src[:0], last=True)])
    assert np.allclose(joined, resample(src, 32000, RATE), atol=1e-6)
    with pytest.raises(ValueError, match="mono"):
        resample(np.zeros((10, 2), np.float32), 32000, RATE)


def test_capture_gets_the_clip_sample_for_sample(rig: Rig) -> None:
    clip = tone(0.4)
    pressed = time.monotonic_ns()
    uid = rig.player.play(
        Clip(clip, {"voice": "chen-ama", "phrase": "welcome"}), requested_ns=pressed
    )
    (got,) = rig.files(1)
    assert np.array_equal(got, clip)
    assert rig.output.written[0].name == f"{uid:06d}-chen-ama-welcome.wav"
    playing, finished = rig.of("playing"), rig.of("finished")
    assert [e.utterance for e in playing] == [uid] and playing[0].requested_ns == pressed
    assert playing[0].first_sample_ns >= pressed
    # The first sample reaches the callback within a block or two of the press.
    assert playing[0].first_sample_ns - pressed < 50e6
    assert finished[0].reason == "done" and finished[0].seconds == pytest.approx(0.4)
    assert finished[0].position_s == pytest.approx(0.4)
    assert rig.player.now_playing() is None
    assert rig.output.status().ok and "1 utterance(s) written" in rig.output.status().detail


def test_fade_only_where_needed(rig: Rig) -> None:
    loud = np.full(4800, 0.5, dtype=np.float32)  # starts and ends loud: a click both ways
    rig.player.play(Clip(loud, {"label": "dc"}))
    (got,) = rig.files(1)
    assert got.shape[0] == 4800 + FADE  # the decay after the last sample
    assert got[0] == pytest.approx(0.5 / FADE)
    assert np.array_equal(got[FADE:4800], loud[FADE:])  # the middle is untouched
    assert got[-1] == 0.0
    assert max_step(got) <= 0.5 / FADE + 1e-6


def test_interrupt_fades_out_then_plays_the_new_clip(rig: Rig) -> None:
    first = tone(2.0, amp=0.8, quiet_ends=False)
    second = tone(0.3)
    a = rig.player.play(Clip(first, {"label": "long"}))
    while not rig.of("playing"):
        time.sleep(0.002)
    time.sleep(0.05)
    now = rig.player.now_playing()
    assert now is not None and now.utterance == a and now.position_s > 0
    b = rig.player.play(Clip(second, {"label": "short"}), when_playing="interrupt")
    cut, new = rig.files(2)
    assert len(cut) < len(first)
    played = len(cut) - FADE
    assert np.array_equal(cut[:played], first[:played])  # as it was until the cut
    assert cut[-1] == 0.0  # faded to silence
    natural = float(np.abs(np.diff(first)).max())
    assert max_step(cut) <= natural + 0.8 / FADE + 1e-6  # no click at the cut
    assert np.array_equal(new, second)  # starts from silence: untouched
    reasons = {e.utterance: e.reason for e in rig.of("finished")}
    assert reasons == {a: "interrupted", b: "done"}


def test_queue_and_ignore(rig: Rig) -> None:
    one, two = tone(0.2), tone(0.15, freq=330)
    a = rig.player.play(Clip(one, {"label": "one"}))
    b = rig.player.play(Clip(two, {"label": "two"}), when_playing="queue")
    assert rig.player.play(Clip(two, {"label": "three"}), when_playing="ignore") is None
    got_one, got_two = rig.files(2)
    assert np.array_equal(got_one, one) and np.array_equal(got_two, two)
    finished = rig.of("finished")
    assert [(e.utterance, e.reason) for e in finished] == [(a, "done"), (b, "done")]
    first_b = next(e for e in rig.of("playing") if e.utterance == b).first_sample_ns
    assert first_b > finished[0].first_sample_ns
    # Nothing plays now, so an `ignore` press is taken.
    c = rig.player.play(Clip(one, {"label": "again"}), when_playing="ignore")
    assert c is not None
    rig.files(3)


def test_stop_fades_and_drops_the_queue(rig: Rig) -> None:
    a = rig.player.play(Clip(tone(2.0, quiet_ends=False), {"label": "a"}))
    b = rig.player.play(Clip(tone(1.0), {"label": "b"}), when_playing="queue")
    while not rig.of("playing"):
        time.sleep(0.002)
    rig.player.stop()
    (cut,) = rig.files(1)  # b never played: no file
    assert cut[-1] == 0.0 and max_step(cut) < 0.02
    assert {e.utterance: e.reason for e in rig.of("finished")} == {a: "stopped", b: "stopped"}
    with pytest.raises(ValueError, match="when_playing"):
        rig.player.play(Clip(tone(0.1)), when_playing="later")
    with pytest.raises(ValueError, match="resample"):
        rig.player.play(Clip(tone(0.1), {"sample_rate": 32000}))
    with pytest.raises(ValueError, match="float32"):
        rig.player.play(Clip(np.zeros(100)))


def test_stream_with_underrun_stays_one_utterance(rig: Rig) -> None:
    meta = {"voice": "chen-ama", "text": "你好"}
    stream = rig.player.open_stream(meta, requested_ns=time.monotonic_ns())
    assert stream is not None
    part1 = tone(0.1, quiet_ends=False)[:4000]  # stops mid-signal: the ring runs dry
    part2 = tone(0.1)
    assert stream.push(part1)
    time.sleep(0.1)  # 0.1 s at 8x: several blocks of underrun
    assert stream.push(part2)
    stream.finish()
    (got,) = rig.files(1)
    assert np.array_equal(got[:4000], part1)
    assert np.array_equal(got[-len(part2) :], part2)
    gap = got[4000 : len(got) - len(part2)]
    assert len(gap) > FADE and np.all(gap[FADE:] == 0.0)  # decay, then silence
    assert max_step(got) <= float(np.abs(np.diff(part1)).max()) + 0.5 / FADE + 1e-6
    assert len(rig.of("playing")) == 1 and len(rig.of("finished")) == 1
    assert rig.of("finished")[0].reason == "done"
    assert rig.of("finished")[0].seconds == pytest.approx((4000 + len(part2)) / RATE)
    assert rig.output.written[0].name.endswith("-chen-ama.wav")


def test_stream_fail_cancel_and_ignore(rig: Rig) -> None:
    bad = rig.player.open_stream({"label": "bad"})
    assert bad.push(tone(0.05))
    bad.fail("synthesis failed: out of memory")
    assert rig.player.wait_idle(5)
    (fin,) = rig.of("finished")
    assert (fin.reason, fin.error) == ("error", "synthesis failed: out of memory")
    # A stream still being made is cancelled by a stop: push says so.
    pending = rig.player.open_stream({"label": "pending"})
    assert rig.player.open_stream({"label": "x"}, when_playing="ignore") is None
    rig.player.stop()
    assert rig.player.wait_idle(5)
    assert rig.of("finished")[-1].reason == "stopped"
    assert pending.push(tone(0.05)) is False
    rig.files(1)  # only the failed one was heard


def test_gain_cap_and_ramp(tmp_path: Path) -> None:
    r = Rig(tmp_path / "c", gain_cap=0.5, volume=1.0, progress_s=0.02)
    try:
        assert r.player.gain == 0.5
        assert r.player.set_gain(1.0) == 0.5  # the cap wins
        with pytest.raises(ValueError):
            r.player.set_gain(1.5)
        clip = tone(0.3, amp=1.0)
        r.player.play(Clip(clip, {"label": "capped"}))
        (got,) = r.files(1)
        assert np.abs(got).max() <= 0.5 + 1e-6
        assert np.allclose(got, clip * 0.5, atol=1e-6)
        r.player.set_gain(0.1)
        long = tone(1.0, amp=1.0)
        second = r.player.play(Clip(long, {"label": "ramped"}))
        got = r.files(2)[1]
        progress = [e.position_s for e in r.of("progress") if e.utterance == second]
        assert len(progress) >= 3 and progress == sorted(progress)
        assert np.allclose(got[-2000:], long[-2000:] * 0.1, atol=1e-6)
        ratio = np.abs(got[2000:3000]) / np.maximum(np.abs(long[2000:3000]), 1e-3)
        assert np.all(ratio <= 0.5 + 1e-4)
    finally:
        r.player.close()


def test_render_allocates_no_arrays(tmp_path: Path) -> None:
    """Drive render directly with big blocks: any temporary array (16 KiB at 4096 frames)
    would raise tracemalloc's peak; Python's own scalars stay far below that."""
    block = 4096
    out = NullOutput(sample_rate=RATE, blocksize=block)
    player = Player(out)  # not started: this test is the audio thread
    buf = np.zeros(block, np.float32)
    clips = [Clip(tone(1.0, quiet_ends=False), {"label": str(i)}) for i in range(3)]
    stream_data = tone(0.5, quiet_ends=False)

    def blocks(count: int) -> int:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(count):
            player._render(buf)
        _, peak = tracemalloc.get_traced_memory()
        return peak - before

    tracemalloc.start()
    try:
        player._render(buf)  # warm up code paths
        growth = []
        player.play(clips[0])
        growth.append(blocks(4))
        player.play(clips[1])  # interrupt: fade out, then the next one
        player.set_gain(0.3)
        growth.append(blocks(4))
        player.play(clips[2], when_playing="queue")
        growth.append(blocks(20))  # to the natural end and past it
        stream = player.open_stream({"label": "s"})
        stream.push(stream_data[:6000])
        growth.append(blocks(6))  # plays, runs dry, decays, silence
        stream.push(stream_data[6000:])
        stream.finish()
        player.stop()
        growth.append(blocks(4))
    finally:
        tracemalloc.stop()
    assert max(growth) < 4096, growth
    kinds = [kind for kind, _ in player._events]
    assert kinds.count("playing") == 4 and kinds.count("finished") == 4


def test_make_output_and_labels(tmp_path: Path) -> None:
    assert isinstance(make_output("null"), NullOutput)
    cap = make_output(f"capture:{tmp_path}", sample_rate=16000, blocksize=128)
    assert isinstance(cap, CaptureOutput) and cap.sample_rate == 16000 and cap.folder == tmp_path
    dev = make_output("default")
    assert isinstance(dev, SoundDeviceOutput) and dev.device is None
    assert make_output("3").device == 3 and make_output("USB Audio").device == "USB Audio"
    with pytest.raises(ValueError, match="capture"):
        make_output("capture:")
    assert safe_label("chen-ama/../../etc passwd") == "chen-ama_.._.._etc_passwd"
    assert safe_label("你好") == "utterance"


def test_null_output_is_paced_in_real_time() -> None:
    out = NullOutput(sample_rate=RATE, blocksize=BLOCK)
    calls = []
    out.start(lambda block: calls.append(time.monotonic()))
    time.sleep(0.5)
    out.stop()
    # 0.5 s is 93.75 blocks; a loaded 2-core CI may fall a little behind, never ahead.
    assert 60 <= len(calls) <= 100, len(calls)
    assert out.status().last_callback_ns > 0 and not out.status().ok

    def broken(block: np.ndarray) -> None:
        raise ZeroDivisionError("bug")

    out = NullOutput(sample_rate=RATE, blocksize=BLOCK)
    out.start(broken)
    time.sleep(0.05)
    status = out.status()
    out.stop()
    assert not status.ok and "the player failed (bug)" in status.detail


ALSA_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from appliance.audio.outputs import SoundDeviceOutput
    from appliance.audio.player import Clip, Player

    out = SoundDeviceOutput(sys.argv[1], sample_rate=48000, blocksize=256, retry_initial_s=0.05)
    events = []
    player = Player(out, on_event=events.append)
    player.start()
    report = {"opened": out.wait_until_open(10)}
    report["status"] = out.status().detail
    beat = player.heartbeat_ns
    time.sleep(0.05)
    report["beats"] = player.heartbeat_ns > beat
    player.play(Clip(np.zeros(2400, np.float32), {"label": "x"}))
    report["idle"] = player.wait_idle(10)
    render = out._render

    def fail_once(block):  # the stream ends under the player, as when a device goes away
        out._render = render
        raise RuntimeError("device gone")

    out._render = fail_once
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and out.status().restarts == 0:
        time.sleep(0.02)
    report["reopened"] = out.wait_until_open(10)
    report["restarts"] = out.status().restarts
    player.close()
    report["events"] = [(e.kind, e.reason) for e in events]
    print(json.dumps(report))
    """
)


def test_sounddevice_on_the_alsa_null_device(tmp_path: Path) -> None:
    """A real PortAudio stream on ALSA's null PCM, in a child process (ALSA reads
    ALSA_CONFIG_PATH when it loads); then the stream dies and is reopened."""
    conf = write_alsa_null_config(tmp_path / "alsa.conf")
    env = {**os.environ, "ALSA_CONFIG_PATH": str(conf), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", ALSA_SCRIPT, ALSA_NULL_DEVICE],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["opened"] and report["beats"] and report["idle"], report
    assert f"playing on '{ALSA_NULL_DEVICE}' at 48000 Hz" in report["status"]
    assert report["reopened"] and report["restarts"] == 1, report
    assert ["playing", None] in report["events"] and ["finished", "done"] in report["events"]
    assert "audio lost (the player failed: device gone); reopening" in done.stderr


def test_missing_device_is_reported_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    out = SoundDeviceOutput("no-such-sound-card", retry_initial_s=0.02, retry_max_s=0.08)
    rendered = threading.Event()
    with caplog.at_level("INFO", logger="appliance.audio.outputs"):
        out.start(lambda block: rendered.set())
        deadline = time.monotonic() + 10
        while out.status().open_failures < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        status = out.status()
        out.stop()
    assert not status.ok and status.open_failures >= 4
    assert "sounddevice:no-such-sound-card: no audio" in status.detail
    assert "retrying in" in status.detail and not rendered.is_set()
    delays = [r.getMessage().split("retrying in ")[1].split(" s")[0] for r in caplog.records]
    assert delays[:4] == ["0.02", "0.04", "0.08", "0.08"]  # back-off, capped
    assert caplog.records[0].levelname == "WARNING"
    assert QUIET > 0  # the fade threshold is a level, not zero


def test_audio_thread_asks_for_real_time_priority() -> None:
    """Where SCHED_FIFO is allowed (root, LimitRTPRIO) the pacing thread gets it; where
    not, it runs anyway and the status says why and what to set."""
    allowed: list[bool] = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))
            allowed.append(True)
        except OSError:
            allowed.append(False)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    policies: list[int] = []
    out = NullOutput(sample_rate=RATE, blocksize=BLOCK, realtime_priority=5)
    out.start(lambda block: policies.append(os.sched_getscheduler(0)) if not policies else None)
    deadline = time.monotonic() + 5
    while not policies and time.monotonic() < deadline:
        time.sleep(0.01)
    detail = out.status().detail
    out.stop()
    if allowed[0]:
        assert policies == [os.SCHED_FIFO] and "real-time priority 5" in detail
    else:
        assert policies == [os.SCHED_OTHER] and "LimitRTPRIO=5" in detail


def test_labels_are_kept_only_for_a_sink_that_uses_them() -> None:
    """A box plays for months: a sink that never reads labels must not collect them."""
    out = NullOutput(sample_rate=RATE, blocksize=BLOCK, speed=8)
    player = Player(out)
    player.start()
    try:
        for _ in range(5):
            player.play(Clip(tone(0.02), {"voice": "v", "phrase": "p"}), when_playing="queue")
        assert player.wait_idle(5.0)
        assert player.marks.labels == {}
    finally:
        player.close()


def test_capture_numbers_on_after_a_restart(tmp_path: Path) -> None:
    """A restarted daemon's capture sink must not overwrite the earlier run's files."""
    for run in range(2):
        out = CaptureOutput(tmp_path, sample_rate=RATE, blocksize=BLOCK, speed=8)
        player = Player(out)
        player.start()
        try:
            player.play(Clip(tone(0.02), {"voice": "v", "phrase": f"run{run}"}))
            assert player.wait_idle(5.0)
        finally:
            player.close()
    names = sorted(p.name for p in tmp_path.glob("*.wav"))
    assert names == ["000001-v-run0.wav", "000002-v-run1.wav"]
