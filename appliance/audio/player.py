"""The player: one output kept open, clips and streams played gap-free, fades, gain cap.

Threads and what each may do:

- callers (`play`, `open_stream`, `stop`, `set_gain`) post requests to a deque and
  return at once;
- the audio thread (the output's callback) runs `_render`: it takes the requests
  at the start of each block (so a new clip starts at the next callback), copies
  samples from the clip's own array or the stream's preallocated ring into the
  output block with in-place numpy operations on preallocated buffers, and
  appends events to a deque: no array allocation, no lock, no I/O;
- the event thread delivers `PlayerEvent`s (`playing`, `progress`, `finished`)
  to `on_event`, and frees what the audio thread has finished with.

Fade rule (so that nothing clicks, and cached audio stays bit-exact): every
utterance starts and ends at silence.  A clip whose first sample is louder than
`QUIET` (-40 dBFS) is faded in over `fade_ms`; one whose last sample is louder
is followed by a `fade_ms` decay from that sample to zero; `stop` and an
interrupting `play` fade the rest out over `fade_ms`; a stream that runs dry
decays from its last sample and resumes with the same start rule.  A clip that
starts and ends quiet, at gain 1.0, comes out sample for sample.

Gain: `set_gain(volume)` ramps to `min(volume, gain_cap)` over `fade_ms`; the cap
is fixed when the player is made (from `[audio] gain_cap`), so no API call or
schedule can play louder.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.audio.outputs import AudioOutput, BlockMarks

log = logging.getLogger(__name__)

#: Below this (-40 dBFS) a first or last sample needs no fade.
QUIET = 0.01
WHEN_PLAYING = ("interrupt", "queue", "ignore")
#: Finished reasons.
DONE, INTERRUPTED, STOPPED, ERROR = "done", "interrupted", "stopped", "error"
#: Default ring of a stream: seconds of audio a producer may run ahead.
STREAM_SECONDS = 30.0
#: How often the event thread looks for events (the audio thread cannot wake it
#: without a lock); the timing figures themselves are taken on the audio thread.
EVENT_POLL_S = 0.004


@dataclass(frozen=True)
class Clip:
    """Audio to play: float32 mono samples at the output's rate, and what it is.

    `meta` travels into every event (voice, phrase, kind, label ...); `meta["label"]`,
    else voice/phrase/archival, names the capture file.
    """

    samples: np.ndarray
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlayerEvent:
    """Something the player did, delivered on the event thread."""

    kind: str
    """`playing`, `progress` or `finished`."""
    utterance: int
    """The id `play` / `open_stream` returned."""
    meta: Mapping[str, Any]
    """The clip's or stream's meta, as given."""
    position_s: float = 0.0
    """Seconds of the utterance played so far."""
    seconds: float | None = None
    """The clip's length (None for a stream still being made)."""
    requested_ns: int | None = None
    """`time.monotonic_ns()` the caller gave as the moment of the request (the press)."""
    first_sample_ns: int | None = None
    """When the first sample was handed to the output's callback (monotonic ns)."""
    reason: str | None = None
    """For `finished`: `done`, `interrupted`, `stopped` or `error`."""
    error: str | None = None
    """For `finished` with reason `error`: what went wrong."""


def _label(meta: Mapping[str, Any]) -> str:
    if meta.get("label"):
        return str(meta["label"])
    parts = [str(meta[k]) for k in ("voice", "phrase", "archival") if meta.get(k)]
    return "-".join(parts) or ("text" if meta.get("text") else "utterance")


class _Source:
    """An utterance being played (one per `play` / `open_stream`); touched by the audio
    thread only through plain attributes and preallocated arrays."""

    def __init__(self, uid: int, meta: Mapping[str, Any], requested_ns: int | None) -> None:
        self.uid = uid
        self.meta = meta
        self.requested_ns = requested_ns
        self.first_ns = 0
        self.position = 0  # frames played
        self.check_start = True  # decide on a fade-in at the next real sample
        self.fade_in = -1  # frames into the fade-in, -1: none
        self.cut_left = -1  # frames left of a stop/interrupt fade-out, -1: no cut
        self.cut_reason = DONE
        self.decay_left = 0
        self.decay_level = 0.0
        self.last = 0.0  # last real sample written (before gain)
        self.ending = False
        self.reason = DONE
        self.error: str | None = None

    # Overridden: copy up to len(out) samples into out, return how many.
    def take(self, out: np.ndarray) -> int:
        raise NotImplementedError

    def exhausted(self) -> bool:
        raise NotImplementedError

    def seconds(self, rate: int) -> float | None:
        return None


class _ArraySource(_Source):
    def __init__(self, uid: int, clip: Clip, requested_ns: int | None) -> None:
        super().__init__(uid, clip.meta, requested_ns)
        self.samples = clip.samples
        self.cursor = 0
        self.length = int(clip.samples.shape[0])

    def take(self, out: np.ndarray) -> int:
        k = min(out.shape[0], self.length - self.cursor)
        if k > 0:
            np.copyto(out[:k], self.samples[self.cursor : self.cursor + k])
            self.cursor += k
        return k

    def exhausted(self) -> bool:
        return self.cursor >= self.length

    def seconds(self, rate: int) -> float | None:
        return self.length / rate


class StreamClip(_Source):
    """A stream being made while it plays: a producer thread pushes samples at the
    output rate into a preallocated ring; the player starts on the first chunk.

    `push` waits while the ring is full and returns False once the utterance has
    ended (stopped, interrupted): then the producer should stop making audio.
    """

    def __init__(
        self,
        player: Player,
        uid: int,
        meta: Mapping[str, Any],
        requested_ns: int | None,
        mode: str,
        capacity: int,
    ) -> None:
        super().__init__(uid, meta, requested_ns)
        self.utterance = uid
        self._player = player
        self._mode = mode
        self._ring = np.zeros(capacity, dtype=np.float32)
        self._cap = capacity
        self._written = 0  # producer's count (only the producer writes it)
        self._read = 0  # audio thread's count (only the audio thread writes it)
        self._finished = False
        self._posted = False
        self.closed = False  # the player is done with it (set by the event thread)

    # -- producer side

    def push(self, samples: np.ndarray, timeout: float | None = None) -> bool:
        """Append float32 samples at the output rate; False when no longer wanted."""
        if self._finished:
            raise RuntimeError("push after finish() / fail()")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        end = None if timeout is None else time.monotonic() + timeout
        i = 0
        while i < x.shape[0]:
            if self.closed:
                return False
            free = self._cap - (self._written - self._read)
            if free == 0:
                if end is not None and time.monotonic() > end:
                    raise TimeoutError("the stream's ring stayed full (is the output running?)")
                time.sleep(0.002)
                continue
            n = min(free, x.shape[0] - i)
            w = self._written % self._cap
            first = min(n, self._cap - w)
            self._ring[w : w + first] = x[i : i + first]
            if n > first:
                self._ring[: n - first] = x[i + first : i + n]
            i += n
            self._written += n  # publish after the data is in place
            if not self._posted:
                self._player._post_stream(self)
        return not self.closed

    def finish(self) -> None:
        """No more samples: the utterance ends when the ring is played out."""
        self._finished = True
        if not self._posted:  # an empty stream: nothing to play, still one finished event
            self._player._post_stream(self)

    def fail(self, reason: str) -> None:
        """The producer failed: what is buffered plays, then `finished` with reason error."""
        self.error = reason
        self.finish()

    # -- audio thread

    def take(self, out: np.ndarray) -> int:
        avail = self._written - self._read
        n = min(out.shape[0], avail)
        if n <= 0:
            return 0
        r = self._read % self._cap
        first = min(n, self._cap - r)
        np.copyto(out[:first], self._ring[r : r + first])
        if n > first:
            np.copyto(out[first:n], self._ring[: n - first])
        self._read += n
        return n

    def exhausted(self) -> bool:
        return self._finished and self._read >= self._written

    def seconds(self, rate: int) -> float | None:
        return self._written / rate if self._finished else None


class Player:
    """Plays clips and streams on one output; see the module docstring for the rules."""

    def __init__(
        self,
        output: AudioOutput,
        *,
        fade_ms: float = 8.0,
        gain_cap: float = 1.0,
        volume: float = 1.0,
        on_event: Callable[[PlayerEvent], None] | None = None,
        progress_s: float = 0.25,
        max_block: int = 8192,
    ) -> None:
        if not 0.0 <= gain_cap <= 1.0:
            raise ValueError(f"gain_cap must be 0-1, got {gain_cap}")
        if not 1.0 <= fade_ms <= 50.0:
            raise ValueError(f"fade_ms must be 1-50, got {fade_ms}")
        self.output = output
        self.sample_rate = output.sample_rate
        self.gain_cap = gain_cap
        self.on_event = on_event
        self.progress_s = progress_s
        self.fade = max(1, round(self.sample_rate * fade_ms / 1000))
        f = self.fade
        # Ramps: up[i] = (i+1)/f ends at 1, down[i] = 1 - (i+1)/f ends at exactly 0.
        self._up = (np.arange(1, f + 1, dtype=np.float64) / f).astype(np.float32)
        self._down = (1.0 - np.arange(1, f + 1, dtype=np.float64) / f).astype(np.float32)
        self._down[-1] = 0.0
        # A gain ramp lasts `fade` frames, so these never need to be longer than that.
        ramp_len = max(max_block, f)
        self._index = np.arange(1, ramp_len + 1, dtype=np.float32)
        self._scratch = np.zeros(ramp_len, dtype=np.float32)
        self.marks = BlockMarks()
        self._requests: collections.deque[tuple[str, Any, Any]] = collections.deque()
        self._events: collections.deque[tuple[str, Any]] = collections.deque()
        self._queue: collections.deque[_Source] = collections.deque()
        self._cur: _Source | None = None
        self._gain = min(max(volume, 0.0), gain_cap)
        self._gain_target = self._gain
        self._gain_step = 0.0
        self._gain_left = 0
        self._ids = 0
        self._ctl = threading.Lock()  # callers only; the audio thread never takes it
        self._active: dict[int, _Source] = {}  # accepted, not yet finished (event thread)
        self._playing: _Source | None = None  # as the event thread last saw it
        self.heartbeat_ns = 0
        self._stop_events = threading.Event()
        self._event_thread: threading.Thread | None = None
        self._started = False

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Start the output (it calls render from now on) and the event thread."""
        if self._started:
            return
        self._started = True
        self._event_thread = threading.Thread(
            target=self._event_loop, name="player-events", daemon=True
        )
        self._event_thread.start()
        self.output.start(self._render, self.marks)

    def close(self) -> None:
        """Stop the output and deliver the last events."""
        if not self._started:
            return
        self.output.stop()
        self._stop_events.set()
        if self._event_thread is not None:
            self._event_thread.join(timeout=5)
        self._started = False

    def __enter__(self) -> Player:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def play(
        self, clip: Clip, *, when_playing: str = "interrupt", requested_ns: int | None = None
    ) -> int | None:
        """Play a clip; returns its utterance id, or None when ignored (busy, `ignore`)."""
        samples = clip.samples
        if not isinstance(samples, np.ndarray) or samples.dtype != np.float32 or samples.ndim != 1:
            raise ValueError(
                "Clip.samples must be a 1-D float32 numpy array at the output rate "
                f"(resample first); got {type(samples).__name__} "
                f"{getattr(samples, 'dtype', '')} {getattr(samples, 'shape', '')}"
            )
        rate = clip.meta.get("sample_rate")
        if rate is not None and int(rate) != self.sample_rate:
            raise ValueError(
                f"the clip is at {rate} Hz, the output at {self.sample_rate} Hz: "
                "resample it first (appliance.audio.resample)"
            )
        if not samples.flags.c_contiguous:
            samples = np.ascontiguousarray(samples)
            clip = Clip(samples, clip.meta)
        mode = self._check_mode(when_playing)
        with self._ctl:
            if mode == "ignore" and self._busy():
                return None
            src = _ArraySource(self._next_id(), clip, requested_ns)
            if mode == "interrupt":
                self._cancel_unposted(INTERRUPTED)
            self._accept(src)
            self._post("play", src, "queue" if mode == "queue" else "interrupt")
            return src.uid

    def open_stream(
        self,
        meta: Mapping[str, Any],
        *,
        when_playing: str = "interrupt",
        requested_ns: int | None = None,
        seconds: float = STREAM_SECONDS,
    ) -> StreamClip | None:
        """A stream to push samples into; None when ignored. It plays from the first push."""
        mode = self._check_mode(when_playing)
        with self._ctl:
            if mode == "ignore" and self._busy():
                return None
            capacity = max(self.output.blocksize * 4, int(seconds * self.sample_rate))
            stream = StreamClip(
                self,
                self._next_id(),
                meta,
                requested_ns,
                "queue" if mode == "queue" else "interrupt",
                capacity,
            )
            self._accept(stream)
            return stream

    def stop(self) -> None:
        """Fade out what plays, drop what is queued (each gets `finished`, reason stopped)."""
        with self._ctl:
            self._cancel_unposted(STOPPED)
            self._post("stop", None, None)

    def set_gain(self, volume: float) -> float:
        """Ramp to `volume` (0-1), never above the gain cap; returns the gain applied."""
        if not 0.0 <= float(volume) <= 1.0:
            raise ValueError(f"volume must be 0-1, got {volume}")
        gain = min(float(volume), self.gain_cap)
        self._post("gain", gain, None)
        return gain

    @property
    def gain(self) -> float:
        """The gain the audio thread applies now (mid-ramp values included)."""
        return self._gain

    def now_playing(self) -> PlayerEvent | None:
        """What plays now, as a `progress` event (None: silence)."""
        src = self._cur
        if src is None or not src.first_ns:
            return None
        return self._event("progress", src)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every accepted utterance has finished (tests, shutdown)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self._active:
                return True
            time.sleep(0.005)
        return False

    def _check_mode(self, when_playing: str) -> str:
        if when_playing not in WHEN_PLAYING:
            raise ValueError(f"when_playing must be one of {', '.join(WHEN_PLAYING)}")
        return when_playing

    def _busy(self) -> bool:
        return bool(self._active)

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _accept(self, src: _Source) -> None:
        self._active[src.uid] = src
        # The capture sink names its file from this (and pops it); set before the audio
        # thread sees src.  Other sinks never pop: recording for them would leak.
        if getattr(self.output, "uses_labels", False):
            self.marks.labels[src.uid] = _label(src.meta)

    def _post(self, kind: str, a: Any, b: Any) -> None:
        self._requests.append((kind, a, b))

    def _post_stream(self, stream: StreamClip) -> None:
        """A stream's first chunk (or its end): from now on it plays like a clip."""
        with self._ctl:
            if stream._posted or stream.closed:
                return
            if stream._mode == "interrupt":
                self._cancel_unposted(INTERRUPTED, keep=stream)
            stream._posted = True
            self._post("play", stream, stream._mode)

    def _cancel_unposted(self, reason: str, keep: StreamClip | None = None) -> None:
        """Streams still being made (no sample yet) end too: a stop or a new press wins."""
        for src in list(self._active.values()):
            if isinstance(src, StreamClip) and not src._posted and src is not keep:
                src._posted = True
                src.closed = True
                src.reason = reason
                src.ending = True
                self._events.append(("finished", src))

    # ------------------------------------------------------------------ audio thread

    def _render(self, out: np.ndarray) -> None:
        """Fill one block; runs on the audio thread (see the module docstring)."""
        self.heartbeat_ns = time.monotonic_ns()
        self.marks.count = 0
        requests = self._requests
        while requests:
            self._handle(*requests.popleft())
        n = out.shape[0]
        pos = 0
        while pos < n:
            src = self._cur
            if src is None:
                if not self._queue:
                    out[pos:].fill(0.0)
                    break
                src = self._cur = self._queue.popleft()
            start = pos
            pos = self._fill(src, out, pos, n)
            if src.first_ns and (pos > start or src.ending):
                self.marks.add(src.uid, start, pos, src.ending)
            if src.ending:
                self._cur = None
                self._events.append(("finished", src))
        self._apply_gain(out, n)

    def _handle(self, kind: str, a: Any, b: Any) -> None:
        if kind == "play":
            if b == "interrupt":
                self._drop_queue(INTERRUPTED)
                self._cut(INTERRUPTED)
            self._queue.append(a)
        elif kind == "stop":
            self._drop_queue(STOPPED)
            self._cut(STOPPED)
        elif kind == "gain":
            self._gain_target = a
            self._gain_left = self.fade
            self._gain_step = (a - self._gain) / self.fade

    def _drop_queue(self, reason: str) -> None:
        q = self._queue
        while q:
            src = q.popleft()
            src.reason = reason
            src.ending = True
            self._events.append(("finished", src))

    def _cut(self, reason: str) -> None:
        src = self._cur
        if src is None or src.ending or src.cut_left >= 0:
            return
        src.cut_reason = reason
        if src.first_ns == 0 or src.decay_left or (abs(src.last) <= QUIET and src.check_start):
            # Nothing heard yet, or already at silence: end at once.
            src.cut_left = 0
        else:
            src.cut_left = self.fade

    def _fill(self, src: _Source, out: np.ndarray, pos: int, n: int) -> int:
        """Write src's samples into out[pos:n]; returns the new position."""
        f = self.fade
        while pos < n:
            if src.decay_left:
                j = min(n - pos, src.decay_left)
                k = f - src.decay_left
                np.multiply(self._down[k : k + j], src.decay_level, out=out[pos : pos + j])
                src.decay_left -= j
                src.position += j
                pos += j
                if src.decay_left == 0:
                    src.last = 0.0
                    src.check_start = True
                continue
            if src.ending:
                break
            if src.cut_left == 0:
                self._end(src, src.cut_reason)
                break
            want = n - pos
            if src.cut_left > 0:
                want = min(want, src.cut_left)
            got = src.take(out[pos : pos + want])
            if got:
                seg = out[pos : pos + got]
                if src.first_ns == 0:
                    src.first_ns = time.monotonic_ns()
                    self._events.append(("playing", src))
                if src.check_start:
                    src.check_start = False
                    src.fade_in = 0 if abs(float(seg[0])) > QUIET else -1
                if src.fade_in >= 0:
                    j = min(got, f - src.fade_in)
                    k = src.fade_in
                    np.multiply(seg[:j], self._up[k : k + j], out=seg[:j])
                    src.fade_in = -1 if k + j >= f else k + j
                if src.cut_left > 0:
                    k = f - src.cut_left
                    np.multiply(seg, self._down[k : k + got], out=seg)
                    src.cut_left -= got
                src.last = float(seg[got - 1])
                src.position += got
                pos += got
                continue
            # No sample now: the clip is over, or a stream ran dry.
            if src.exhausted() or src.cut_left > 0:
                reason = src.cut_reason if src.cut_left > 0 else (ERROR if src.error else DONE)
                if abs(src.last) > QUIET:
                    src.decay_left = f
                    src.decay_level = src.last
                    src.last = 0.0
                    src.cut_left = 0  # end once the decay is out
                    src.cut_reason = reason
                    continue
                self._end(src, reason)
                break
            if abs(src.last) > QUIET:  # underrun mid-signal: decay, then silence
                src.decay_left = f
                src.decay_level = src.last
                src.last = 0.0
                continue
            # Underrun at silence: the rest of the block is silent and still this utterance's.
            out[pos:n].fill(0.0)
            src.check_start = True
            if src.first_ns:
                src.position += n - pos
            pos = n
        return pos

    def _end(self, src: _Source, reason: str) -> None:
        src.ending = True
        src.reason = reason

    def _apply_gain(self, out: np.ndarray, n: int) -> None:
        if self._gain_left:
            j = min(n, self._gain_left)
            ramp = self._scratch[:j]
            np.multiply(self._index[:j], self._gain_step, out=ramp)
            np.add(ramp, self._gain, out=ramp)
            np.multiply(out[:j], ramp, out=out[:j])
            self._gain_left -= j
            if self._gain_left == 0:
                self._gain = self._gain_target
            else:
                self._gain = float(ramp[j - 1])
            if j < n and self._gain != 1.0:
                np.multiply(out[j:], self._gain, out=out[j:])
        elif self._gain != 1.0:
            np.multiply(out, self._gain, out=out)

    # ------------------------------------------------------------------ event thread

    def _event(self, kind: str, src: _Source) -> PlayerEvent:
        return PlayerEvent(
            kind=kind,
            utterance=src.uid,
            meta=src.meta,
            position_s=src.position / self.sample_rate,
            seconds=src.seconds(self.sample_rate),
            requested_ns=src.requested_ns,
            first_sample_ns=src.first_ns or None,
            reason=src.reason if kind == "finished" else None,
            error=src.error if kind == "finished" and src.reason == ERROR else None,
        )

    def _emit(self, event: PlayerEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # a listener's bug must not stop playback events
            log.exception("player event listener failed on %s", event.kind)

    def _event_loop(self) -> None:
        next_progress = time.monotonic() + self.progress_s
        while True:
            stopping = self._stop_events.is_set()
            events = self._events
            while events:
                kind, src = events.popleft()
                if kind == "finished":
                    if isinstance(src, StreamClip):
                        src.closed = True
                    self._emit(self._event("finished", src))
                    with self._ctl:
                        self._active.pop(src.uid, None)
                        if src.first_ns == 0:  # never heard: no capture file either
                            self.marks.labels.pop(src.uid, None)
                else:
                    self._emit(self._event(kind, src))
            if stopping:
                self._finish_all()
                return
            now = time.monotonic()
            if now >= next_progress:
                next_progress = now + self.progress_s
                src = self._cur
                if src is not None and src.first_ns and not src.ending:
                    self._emit(self._event("progress", src))
            self._stop_events.wait(EVENT_POLL_S)

    def _finish_all(self) -> None:
        """The output stopped: whatever was accepted ends now, reason stopped."""
        with self._ctl:
            left = sorted(self._active.values(), key=lambda s: s.uid)
            self._active.clear()
        for src in left:
            if isinstance(src, StreamClip):
                src.closed = True
            src.reason = STOPPED
            self._emit(self._event("finished", src))
