"""The audio-sink seam: where the player's samples go.

Like gpiozero's pin factories, the sinks are equal implementations of one
protocol, chosen by `[audio] output` in the config:

- `SoundDeviceOutput`: a real sound device through one `sounddevice.OutputStream`
  kept open for the daemon's life.  A missing device, or one that disappears,
  is a clear status (for the health page) and a background retry with back-off
  (1, 2, 4 ... 30 s); the player's render function stays callable meanwhile.
- `NullOutput`: no device; a thread calls render at real-time pace, so timing,
  heartbeats and "finished" events behave as with a sound card.
- `CaptureOutput(dir)`: a paced null output that also writes every utterance,
  exactly the samples the callback produced for it, as a float32 WAV at the
  output rate: `<utterance id, 6 digits>-<label>.wav` in DIR, written by a
  separate thread once the utterance has ended (atomically: a reader never sees
  half a file).  Tests and technicians use it to hear what the box would play.

The render function (`render(out)`) fills a float32 mono block in place and is
called on the audio thread; it must not allocate arrays, block or do I/O.  It
says which utterance each part of the block belongs to in a preallocated
`BlockMarks` (the capture sink reads it; the others ignore it).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

#: Fills one float32 mono block in place; called on the audio thread.
Render = Callable[[np.ndarray], None]

#: Back-off between attempts to (re)open a sound device, in seconds.
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0


def raise_priority(priority: int) -> str:
    """Put the calling thread on SCHED_FIFO `priority` (0: leave it); says what happened.

    The audio thread waits for the GIL and for a CPU like any other; on a 2-core box
    busy with synthesis, real-time priority is what keeps a press within a block or
    two of the speaker.  Needs root, CAP_SYS_NICE or `LimitRTPRIO=` in the unit.
    """
    if priority <= 0:
        return "normal priority"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return (
            f"normal priority (real-time {priority} refused: {reason}; "
            f"allow it with LimitRTPRIO={priority} in the service)"
        )
    return f"real-time priority {priority}"


class BlockMarks:
    """Which utterance each span of the last rendered block belongs to.

    Preallocated; render fills it without allocating (`count` spans of
    `ids[i]` over frames `starts[i]:ends[i]`; `finals[i]` is true on an
    utterance's last span).  `labels` maps an utterance id to a file-name label;
    the player sets it on its own thread before the utterance can play.
    """

    def __init__(self, capacity: int = 32) -> None:
        self.capacity = capacity
        self.count = 0
        self.ids = np.zeros(capacity, dtype=np.int64)
        self.starts = np.zeros(capacity, dtype=np.int64)
        self.ends = np.zeros(capacity, dtype=np.int64)
        self.finals = np.zeros(capacity, dtype=np.bool_)
        self.overflows = 0
        self.labels: dict[int, str] = {}

    def add(self, utterance: int, start: int, end: int, final: bool) -> None:
        """Record one span (called by render; no allocation)."""
        c = self.count
        if c >= self.capacity:
            self.overflows += 1
            return
        self.ids[c] = utterance
        self.starts[c] = start
        self.ends[c] = end
        self.finals[c] = final
        self.count = c + 1


@dataclass(frozen=True)
class OutputStatus:
    """What the health page shows about the sound output."""

    name: str
    """The output, e.g. `sounddevice:default`, `null`, `capture:/path`."""
    ok: bool
    """True while samples reach the sink."""
    detail: str
    """One line for a technician: the device and rate, or what is wrong and what happens next."""
    last_callback_ns: int
    """`time.monotonic_ns()` of the last callback (0: none yet)."""
    underruns: int
    """Blocks the device asked for too late (xruns) or the pacing thread fell behind."""
    restarts: int
    """Times the stream was reopened after the device failed or went away."""
    open_failures: int = 0
    """Failed attempts to open the device (each followed by a retry)."""


class AudioOutput(Protocol):
    """One audio sink; `start` begins calling render on the sink's audio thread."""

    name: str
    sample_rate: int
    blocksize: int
    #: True when the sink names what it writes from `BlockMarks.labels` (the capture
    #: sink); the player records labels only for such a sink, which pops them.
    uses_labels: bool

    def start(self, render: Render, marks: BlockMarks | None = None) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> OutputStatus: ...


# --------------------------------------------------------------------------- paced (null, capture)


class NullOutput:
    """No device: render is called from a thread at the output's real-time pace.

    `speed` > 1 runs that many times faster than real time (tests); 0 runs as fast
    as the render function allows.
    """

    uses_labels = False

    def __init__(
        self,
        *,
        sample_rate: int = 48000,
        blocksize: int = 256,
        speed: float = 1.0,
        realtime_priority: int = 0,
    ) -> None:
        if sample_rate <= 0 or blocksize <= 0 or speed < 0:
            raise ValueError("sample_rate and blocksize must be positive, speed not negative")
        self.name = "null"
        self.sample_rate = sample_rate
        self.blocksize = blocksize
        self.speed = speed
        self.realtime_priority = realtime_priority
        self._priority = "not started"
        self._error: Exception | None = None
        self._buffer = np.zeros(blocksize, dtype=np.float32)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_ns = 0
        self._underruns = 0
        self._render: Render | None = None
        self._marks: BlockMarks | None = None

    def start(self, render: Render, marks: BlockMarks | None = None) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._render = render
        self._marks = marks
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"audio-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._after_stop()

    def status(self) -> OutputStatus:
        running = self._thread is not None and self._thread.is_alive()
        if not running:
            detail = f"{self.name}: not started"
        elif self._error is not None:
            detail = f"{self.name}: the player failed ({_one_line(self._error)}); see the log"
        else:
            detail = (
                f"{self.name}: no sound device, paced at {self.sample_rate} Hz, {self._priority}"
            )
        return OutputStatus(
            name=self.name,
            ok=running and self._error is None,
            detail=detail,
            last_callback_ns=self._last_ns,
            underruns=self._underruns,
            restarts=0,
        )

    def _block_done(self, block: np.ndarray) -> None:
        """Hook for the capture sink (runs on the pacing thread after each render)."""

    def _after_stop(self) -> None:
        """Hook for the capture sink (runs once the pacing thread has stopped)."""

    def _run(self) -> None:
        render = self._render
        assert render is not None
        self._priority = raise_priority(self.realtime_priority)
        log.info("%s: audio thread at %s", self.name, self._priority)
        block_ns = int(1e9 * self.blocksize / self.sample_rate / (self.speed or 1.0))
        due = time.monotonic_ns()
        buf = self._buffer
        while not self._stop.is_set():
            self._last_ns = time.monotonic_ns()
            if self._marks is not None:
                self._marks.count = 0
            try:
                render(buf)
            except Exception as exc:  # a player bug: keep pacing silence, say so once
                if self._error is None:
                    log.exception("%s: render failed; playing silence", self.name)
                self._error = exc
                buf.fill(0.0)
            self._block_done(buf)
            if self.speed == 0:
                continue
            due += block_ns
            wait = due - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            elif wait < -4 * block_ns:
                # Fell behind by several blocks (a stalled machine): count it, do not
                # burst to catch up (a sound card would have dropped them too).
                self._underruns += 1
                due = time.monotonic_ns()


_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_label(text: str) -> str:
    """A file-name-safe label: letters, digits, '.', '-', '_' (others become '_')."""
    label = _LABEL_UNSAFE.sub("_", text).strip("._-")[:60]
    return label or "utterance"


class CaptureOutput(NullOutput):
    """A paced null output that writes each utterance as a float32 WAV into `folder`.

    Files are `<id:06d>-<label>.wav` (the player's utterance id, then its label) at
    the output rate, holding exactly the samples the callback produced for that
    utterance (after gain and fades).  `written` lists the files in order.  Numbers
    go on from the highest one already in `folder`, so a restarted daemon never
    overwrites what an earlier run captured.
    """

    uses_labels = True

    def __init__(
        self,
        folder: str | Path,
        *,
        sample_rate: int = 48000,
        blocksize: int = 256,
        speed: float = 1.0,
        realtime_priority: int = 0,
    ) -> None:
        super().__init__(
            sample_rate=sample_rate,
            blocksize=blocksize,
            speed=speed,
            realtime_priority=realtime_priority,
        )
        self.folder = Path(folder)
        self.name = f"capture:{self.folder}"
        self.folder.mkdir(parents=True, exist_ok=True)
        numbered = (re.match(r"(\d{6,})-", f.name) for f in self.folder.glob("*.wav"))
        self.offset = max((int(m[1]) for m in numbered if m), default=0)
        self._parts: dict[int, list[np.ndarray]] = {}
        self._jobs: queue.Queue[tuple[int, str, list[np.ndarray]] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self.written: list[Path] = []
        self._written_cv = threading.Condition()
        self.write_errors = 0

    def start(self, render: Render, marks: BlockMarks | None = None) -> None:
        marks = marks if marks is not None else BlockMarks()
        self._writer = threading.Thread(target=self._write_loop, name="capture-writer", daemon=True)
        self._writer.start()
        super().start(render, marks)

    def status(self) -> OutputStatus:
        base = super().status()
        detail = f"{base.detail}; {len(self.written)} utterance(s) written to {self.folder}"
        if self.write_errors:
            detail += f"; {self.write_errors} write error(s), see the log"
        return OutputStatus(
            name=base.name,
            ok=base.ok and not self.write_errors,
            detail=detail,
            last_callback_ns=base.last_callback_ns,
            underruns=base.underruns,
            restarts=0,
        )

    def wait_for_files(self, count: int, timeout: float = 10.0) -> list[Path]:
        """Block until `count` files are written (for tests and `make demo`)."""
        with self._written_cv:
            self._written_cv.wait_for(lambda: len(self.written) >= count, timeout)
            return list(self.written)

    def _block_done(self, block: np.ndarray) -> None:
        marks = self._marks
        assert marks is not None
        for i in range(marks.count):
            uid = int(marks.ids[i])
            part = block[int(marks.starts[i]) : int(marks.ends[i])].copy()
            self._parts.setdefault(uid, []).append(part)
            if marks.finals[i]:
                label = marks.labels.pop(uid, "utterance")
                self._jobs.put((uid, label, self._parts.pop(uid)))

    def _after_stop(self) -> None:
        # Utterances cut short by the sink stopping are written as far as they went.
        marks = self._marks
        for uid, parts in sorted(self._parts.items()):
            label = marks.labels.pop(uid, "utterance") if marks is not None else "utterance"
            self._jobs.put((uid, label + "-unfinished", parts))
        self._parts.clear()
        if self._writer is not None:
            self._jobs.put(None)
            self._writer.join(timeout=10)
            self._writer = None

    def _write_loop(self) -> None:
        import soundfile

        while (job := self._jobs.get()) is not None:
            uid, label, parts = job
            samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
            path = self.folder / f"{uid + self.offset:06d}-{safe_label(label)}.wav"
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                soundfile.write(tmp, samples, self.sample_rate, subtype="FLOAT", format="WAV")
                os.replace(tmp, path)
            except (OSError, RuntimeError) as exc:  # soundfile raises RuntimeError subclasses
                self.write_errors += 1
                log.error("capture: cannot write %s: %s", path, exc)
                continue
            with self._written_cv:
                self.written.append(path)
                self._written_cv.notify_all()


# --------------------------------------------------------------------------- sounddevice


class SoundDeviceOutput:
    """One `sounddevice.OutputStream` kept open, reopened with back-off when it fails.

    `device` is None for PortAudio's default output, an index, or a name (as
    `python -m sounddevice` lists it; a unique part of the name is enough).
    The stream is mono when the device takes it, else stereo with the same
    samples on both channels.
    """

    uses_labels = False

    def __init__(
        self,
        device: str | int | None = None,
        *,
        sample_rate: int = 48000,
        blocksize: int = 256,
        latency: str | float = "high",
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
        stall_s: float = 2.0,
        realtime_priority: int = 0,
    ) -> None:
        self.device = device
        self.name = f"sounddevice:{'default' if device is None else device}"
        self.sample_rate = sample_rate
        self.blocksize = blocksize
        self.latency = latency
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.stall_s = stall_s
        self.realtime_priority = realtime_priority
        self._priority = ""  # set on the first callback of each stream
        self._mono = np.zeros(blocksize * 4, dtype=np.float32)
        self._render: Render | None = None
        self._stream = None
        self._channels = 1
        self._lock = threading.Lock()  # guards the stream object; never taken in the callback
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ok = False
        self._detail = f"{self.name}: not started"
        self._last_ns = 0
        self._underruns = 0
        self._restarts = 0
        self._failures = 0
        self._lost = False  # set by the stream's callbacks when the device goes away
        self._render_error: Exception | None = None
        self._base_detail = ""
        self._abort_exc: type[Exception] = RuntimeError  # sounddevice.CallbackAbort once open
        self._ever_opened = False

    # -- control side

    def start(self, render: Render, marks: BlockMarks | None = None) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._render = render
        self._stop.clear()
        self._thread = threading.Thread(target=self._supervise, name="audio-open", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._close()
        self._ok = False
        self._detail = f"{self.name}: stopped"

    def status(self) -> OutputStatus:
        detail = self._detail
        if self._ok and self._priority and detail == self._base_detail:
            detail = f"{detail}, {self._priority}"
        return OutputStatus(
            name=self.name,
            ok=self._ok,
            detail=detail,
            last_callback_ns=self._last_ns,
            underruns=self._underruns,
            restarts=self._restarts,
            open_failures=self._failures,
        )

    def wait_until_open(self, timeout: float) -> bool:
        """True once the stream is open and a callback has run (for tests and start-up)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._ok and self._last_ns:
                return True
            time.sleep(0.01)
        return False

    def _supervise(self) -> None:
        """Open the stream; on failure or loss, retry with back-off until stopped."""
        delay = self.retry_initial_s
        was_ok = True
        priority_logged = False
        while not self._stop.is_set():
            if self._stream is None:
                try:
                    self._open()
                except Exception as exc:  # PortAudioError, ValueError (no such device), OSError
                    self._failures += 1
                    self._ok = False
                    self._detail = (
                        f"{self.name}: no audio ({_one_line(exc)}); retrying in {delay:g} s "
                        "(check the cable / USB sound card and [audio] output)"
                    )
                    # The first failure is a warning; the retries after it are routine.
                    log.log(logging.WARNING if was_ok else logging.INFO, "%s", self._detail)
                    was_ok = False
                    self._wake.wait(delay)
                    self._wake.clear()
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                delay = self.retry_initial_s
                was_ok = True
            self._wake.wait(0.25)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._priority and not priority_logged:
                priority_logged = True
                log.info("%s: audio thread at %s", self.name, self._priority)
            stalled = (
                self._last_ns
                and time.monotonic_ns() - self._last_ns > self.stall_s * 1e9
                and self._stream is not None
            )
            if self._lost or stalled:
                why = "the device stopped the stream" if self._lost else "no callback for a while"
                if self._render_error is not None:
                    why = f"the player failed: {_one_line(self._render_error)}"
                    log.error("%s: render failed", self.name, exc_info=self._render_error)
                    self._render_error = None
                self._ok = False
                self._detail = f"{self.name}: audio lost ({why}); reopening"
                log.warning("%s", self._detail)
                self._close()
                self._restarts += 1

    def _open(self) -> None:
        import sounddevice as sd

        self._abort_exc = sd.CallbackAbort

        if self._ever_opened or self._failures:
            # PortAudio lists devices once; re-scan so a re-plugged USB card is found.
            sd._terminate()
            sd._initialize()
        device = self.device
        if device is None:
            outputs = [d["name"] for d in sd.query_devices() if d["max_output_channels"] > 0]
            if not outputs:
                raise ValueError("the system lists no sound output at all")
            try:
                info = sd.query_devices(kind="output")
            except sd.PortAudioError as exc:
                raise ValueError(
                    f"no default sound output; devices there: {', '.join(outputs)}"
                ) from exc
        else:
            info = sd.query_devices(device, kind="output")
        channels = 1 if info["max_output_channels"] >= 1 else 0
        if channels == 0:
            raise ValueError(f"{info['name']!r} has no output channels")
        last_error: Exception | None = None
        for channels in (1, 2):
            try:
                stream = sd.OutputStream(
                    device=device,
                    samplerate=self.sample_rate,
                    blocksize=self.blocksize,
                    channels=channels,
                    dtype="float32",
                    latency=self.latency,
                    callback=self._callback,
                    finished_callback=self._finished,
                )
                break
            except sd.PortAudioError as exc:
                last_error = exc
        else:
            assert last_error is not None
            raise last_error
        with self._lock:
            self._channels = channels
            self._priority = ""
            self._lost = False
            self._last_ns = 0
            self._stream = stream
            stream.start()
        self._ever_opened = True
        self._ok = True
        self._detail = (
            f"{self.name}: playing on {info['name']!r} at {self.sample_rate} Hz, "
            f"{channels} channel(s), block {self.blocksize}, latency {stream.latency * 1000:.0f} ms"
        )
        self._base_detail = self._detail
        log.info("%s", self._detail)

    def _close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is None:
            return

        def close() -> None:
            try:
                # Pa_CloseStream aborts a stream that still runs; never abort twice (a
                # second abort of a dead ALSA stream joins its thread again and hangs).
                stream.close(ignore_errors=True)
            except Exception as exc:  # the device may already be gone
                log.debug("%s: closing the stream: %s", self.name, exc)

        # A device that vanished can block the close inside the driver: give it a
        # moment, then reopen regardless (the old stream is left to the OS).
        closer = threading.Thread(target=close, name="audio-close", daemon=True)
        closer.start()
        closer.join(timeout=3.0)
        if closer.is_alive():
            log.warning("%s: the old stream did not close; opening a new one anyway", self.name)

    # -- audio thread

    def _callback(self, outdata: np.ndarray, frames: int, _time: object, status: object) -> None:
        self._last_ns = time.monotonic_ns()
        if not self._priority:  # once per stream: PortAudio's thread is ours from here
            self._priority = raise_priority(self.realtime_priority)
        if status:
            self._underruns += 1
        render = self._render
        try:
            if self._channels == 1:
                render(outdata[:, 0])
            elif frames <= self._mono.shape[0]:
                mono = self._mono[:frames]
                render(mono)
                outdata[:, 0] = mono
                outdata[:, 1] = mono
            else:  # a host that ignores the block size; never seen, but never crash
                outdata.fill(0)
        except Exception as exc:
            # A failing render would repeat every block: end the stream instead (as a
            # device that goes away does); the supervisor logs it and reopens.
            self._render_error = exc
            outdata.fill(0)
            raise self._abort_exc from exc

    def _finished(self) -> None:
        # Called when the stream ends: expected only when we close it ourselves.
        if not self._stop.is_set() and self._stream is not None:
            self._lost = True
            self._wake.set()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------- factory


def make_output(
    spec: str,
    *,
    sample_rate: int = 48000,
    blocksize: int = 256,
    latency: str | float = "high",
    speed: float = 1.0,
    realtime_priority: int = 0,
) -> AudioOutput:
    """The sink `[audio] output` names: `default`, `null`, `capture:DIR`, a device name
    or index.  `speed` applies to the paced sinks (null, capture) only;
    `realtime_priority` (`[audio] realtime_priority`) to every audio thread."""
    paced = {
        "sample_rate": sample_rate,
        "blocksize": blocksize,
        "speed": speed,
        "realtime_priority": realtime_priority,
    }
    if spec == "null":
        return NullOutput(**paced)
    if spec.startswith("capture:"):
        folder = spec[len("capture:") :]
        if not folder:
            raise ValueError('capture output needs a folder: "capture:DIR"')
        return CaptureOutput(folder, **paced)
    device: str | int | None
    if spec == "default":
        device = None
    elif spec.isdigit():
        device = int(spec)
    else:
        device = spec
    return SoundDeviceOutput(
        device,
        sample_rate=sample_rate,
        blocksize=blocksize,
        latency=latency,
        realtime_priority=realtime_priority,
    )
