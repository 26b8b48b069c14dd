"""`Kiosk`: the daemon's one facade (`appliance.service` runs it as `kiosk run` / `kioskd`).

The Kiosk holds the installed voices and wires the parts (appliance/README.md
draws the path of one press): the input sources and their router hand it an
`Action`, it applies the policy (opening hours, what a press does while
something plays, the text policy) and hands the player a clip from the
phrase cache; free text goes to one synthesis worker that streams chunks
into the player as they come.  The HTTP API and the technician page call
the same methods, so a press and a tap take the same path.

Voices: every enabled voice with an active version in the state folder.
A free-text voice is loaded as an `engines.Voice` (with the box's BERT from
its base pack) and warmed; a curated voice is never synthesised on the box
(its phrases come from the build step's cache), so its models are not held
in RAM.  A voice whose consent has ended is listed as disabled and plays
nothing.

Threads: the audio callback (the player's), one synthesis worker, the input
sources' threads, the web server's, the watchdog supervisor, and a reloader
that applies SIGHUP without blocking any of them.  A sound that plays when
the voices change goes on to its end: a clip owns its samples, and a voice
removed while it speaks is closed when its synthesis is done.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import KioskConfig, load_config
from appliance.events import EventHub
from appliance.journal_log import LogTail
from appliance.metrics import KioskMetrics
from appliance.notify import Notifier
from appliance.phrase_cache import (
    PHRASES_DIR,
    FreeTextCache,
    PhraseCache,
    PhraseIndexError,
)
from appliance.supervisor import Supervisor
from appliance.text_policy import TextPolicy, TextRefused, TextRejectedError
from provisioning.pack_format import VoiceDetails
from provisioning.state import Installed, State

log = logging.getLogger(__name__)

#: Seconds the synthesis worker may go without a chunk before the watchdog counts it hung
#: (also the cap of the watchdog timeout systemd gives: the pings stop within it).
SYNTHESIS_STALL_SECONDS = 60.0
#: Seconds the audio callback may go without a call (the stream is kept open, so it is
#: called even in silence; a dead device stops it).
AUDIO_STALL_SECONDS = 5.0
#: Free-text requests waiting for the synthesis worker at most.
SAY_QUEUE = 4
FREE_TEXT_DIR = "cache/free-text"
#: Development-only: a cap on semantic tokens per free-text segment (see `Kiosk`).
MAX_TOKENS_ENV = "KIOSK_FREE_TEXT_MAX_TOKENS"


class KioskError(ValueError):
    """A request the kiosk cannot do (HTTP 400); the message says what to do."""


class NotFoundError(KioskError):
    """No such voice, phrase or recording (HTTP 404)."""


class UnavailableError(KioskError):
    """The voice exists but cannot play now (disabled, closed hours, busy) (HTTP 409)."""


@dataclass
class VoiceEntry:
    """One installed voice as the kiosk holds it."""

    id: str
    installed: Installed
    details: VoiceDetails
    enabled: bool
    """False when its consent has ended (it plays nothing)."""
    reason: str = ""
    """Why it is disabled or degraded, for the health page."""
    voice: Any = None
    """The loaded `engines.Voice` (free-text voices only)."""
    problems: list[str] = field(default_factory=list)

    @property
    def version(self) -> int:
        return self.installed.version

    @property
    def text_policy(self) -> str:
        return self.details.consent.text_policy

    @property
    def free_text(self) -> bool:
        return self.enabled and self.text_policy == "free" and self.voice is not None

    @property
    def phrases_dir(self) -> Path:
        return self.installed.folder / PHRASES_DIR

    def disclosure(self) -> dict[str, str]:
        d = self.details.consent.disclosure
        return {"zh": d.zh, "en": d.en}


class _Stream:
    """A free-text stream into the player, resampled to the output rate as it comes."""

    def __init__(self, stream: Any, rate: int) -> None:
        self.stream = stream
        self.rate = rate
        self.cancelled = stream is None
        self._resampler: Any = None

    def push(self, samples: np.ndarray, rate: int) -> None:
        from appliance.audio.resample import StreamResampler

        if self.cancelled:
            return
        if self._resampler is None:
            self._resampler = StreamResampler(rate, self.rate)
        if not self.stream.push(self._resampler.process(samples)):
            self.cancelled = True

    def finish(self) -> None:
        if self.cancelled:
            return
        if self._resampler is not None:
            tail = self._resampler.process(np.zeros(0, np.float32), last=True)
            if tail.size and not self.stream.push(tail):
                self.cancelled = True
                return
        self.stream.finish()

    def abort(self, reason: str = "stopped") -> None:
        if self.stream is not None and not self.stream.closed:
            self.stream.fail(reason)


@dataclass
class _SayJob:
    utterance: int
    entry: VoiceEntry
    text: str
    source: str
    requested_ns: int
    cancel: threading.Event = field(default_factory=threading.Event)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    if not value:
        return None
    if not value.isdigit() or int(value) <= 0:
        log.warning("%s=%r is not a positive number; ignored", name, value)
        return None
    log.warning("%s=%s: development-only setting is ON", name, value)
    return int(value)


class Kiosk:
    """The daemon's facade (see the module docstring); make it, `start()`, `close()`."""

    def __init__(
        self,
        config: KioskConfig,
        *,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
        log_tail: LogTail | None = None,
        free_text_max_tokens: int | None = None,
    ) -> None:
        self.config = config
        #: Cap on semantic tokens per segment of free text (development: the untrained
        #: sample voices never stop on their own); None: the voice's own caps.
        self.free_text_max_tokens = free_text_max_tokens or _env_int(MAX_TOKENS_ENV)
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.tail = log_tail
        self.state = State(config.state_dir)
        self.events = EventHub()
        self.started = time.monotonic()
        self.voices: dict[str, VoiceEntry] = {}
        self.problems: dict[str, str] = {}
        self.errors: list[dict[str, Any]] = []
        self.last_press: dict[str, Any] | None = None
        self.now_playing: dict[str, Any] | None = None
        self.metrics = KioskMetrics()
        self.reloads = 0
        #: Fault injection, switched on through the development control socket only.
        self.faults: set[str] = set()
        self._numbers = itertools.count(1)
        self._lock = threading.RLock()
        self._reload_lock = threading.Lock()
        self._reload_pending = threading.Event()
        self._say_queue: queue.Queue[_SayJob | None] = queue.Queue(SAY_QUEUE)
        self._current_say: _SayJob | None = None
        self._closing = threading.Event()
        self._retire: list[Any] = []
        self.text_policy = TextPolicy(config.free_text)
        self.phrase_cache = PhraseCache(config.audio.sample_rate, config.cache.ram_mb << 20)
        self.free_cache = FreeTextCache(
            self.state.root / FREE_TEXT_DIR, config.cache.free_text_disk_mb << 20
        )
        self.supervisor = Supervisor(self.notifier, self._watchdog_interval())
        self._synthesis_beat = self.supervisor.register("synthesis", self._synthesis_limit())
        self.player: Any = None
        self.stats: Any = None
        self.router: Any = None
        self.sources: list[Any] = []
        self.schedule: Any = None
        self.browser_watch: Any = None
        self._button_voice: dict[str, str] = {}
        self._housekeeping: threading.Thread | None = None
        self._worker = threading.Thread(target=self._synthesis_loop, name="kiosk-synthesis")
        self._worker.daemon = True

    # --- timing of the watchdog ------------------------------------------------------

    @staticmethod
    def _watchdog_interval() -> float:
        from appliance.notify import watchdog_seconds

        timeout = watchdog_seconds()
        return max(0.05, timeout / 3) if timeout else 1.0

    @staticmethod
    def _synthesis_limit() -> float:
        from appliance.notify import watchdog_seconds

        timeout = watchdog_seconds()
        return min(SYNTHESIS_STALL_SECONDS, timeout) if timeout else SYNTHESIS_STALL_SECONDS

    # --- start and stop ---------------------------------------------------------------

    def start(self) -> None:
        """Load and warm the voices, open the audio stream, start the inputs and workers.

        The web server is started by the caller (`run_daemon`), after this."""
        from appliance.stats import Stats, stats_path

        self._status("loading voices")
        self.stats = Stats(stats_path(self.state.root))
        with self._reload_lock:  # a SIGHUP during the start waits for it
            self._load_voices()
        self._open_player()
        self._start_schedule()
        self._start_inputs()
        self._start_browser_watch()
        self._worker.start()
        self.supervisor.start()

    def close(self) -> None:
        """Stop everything in order: inputs, synthesis, player, stats; safe to call twice."""
        if self._closing.is_set():
            return
        self._closing.set()
        self.events.close()
        for source in self.sources:
            with contextlib.suppress(Exception):
                source.close()
        self.sources = []
        if self.router is not None:
            with contextlib.suppress(Exception):
                self.router.leds_off()
                self.router.close()
        current = self._current_say
        if current is not None:
            current.cancel.set()
        with contextlib.suppress(queue.Full):
            self._say_queue.put_nowait(None)
        if self._worker.is_alive():
            self._worker.join(timeout=2.0)
        if self.player is not None:
            with contextlib.suppress(Exception):
                self.player.close()
        if self.browser_watch is not None:
            with contextlib.suppress(Exception):
                self.browser_watch.stop()
        self.supervisor.stop()
        for entry in self.voices.values():
            self._close_voice(entry.voice, wait=False)
        if self.stats is not None:
            with contextlib.suppress(Exception):
                self.stats.close()

    def _status(self, text: str) -> None:
        log.info("status: %s", text)
        self.notifier.status(text)

    def status_line(self) -> str:
        """The one line `systemctl status` shows once running."""
        enabled = [e for e in self.voices.values() if e.enabled]
        line = f"{len(enabled)} voice(s) on {self.backend_name()}, audio {self.audio_name()}"
        if self.problems:
            line += "; DEGRADED: " + "; ".join(sorted(self.problems.values()))[:300]
        return line

    # --- voices ----------------------------------------------------------------------

    def _load_voices(self) -> None:
        """(Re)read the state folder; returns when every enabled voice is loaded and warm."""
        from provisioning.provision import voices_listing

        try:
            listing = voices_listing(self.state)
        except OSError as exc:
            self._problem("voices", f"state folder {self.state.root}: {exc}")
            listing = []
        wanted = {item["id"]: item for item in listing}
        old = dict(self.voices)
        new: dict[str, VoiceEntry] = {}
        for voice_id, item in wanted.items():
            active = self.state.active(voice_id)
            if active is None or active.manifest.voice is None:
                continue
            previous = old.get(voice_id)
            same = (
                previous is not None
                and previous.installed.folder == active.folder
                and previous.installed.manifest_sha256 == active.manifest_sha256
                and previous.enabled == item["enabled"]
            )
            if same and previous is not None:
                new[voice_id] = previous
                continue
            self._status(f"loading voice {voice_id} v{active.version}")
            new[voice_id] = self._load_entry(voice_id, active, bool(item["enabled"]))
        with self._lock:
            self.voices = new
        for voice_id, entry in old.items():
            if new.get(voice_id) is not entry:
                if voice_id not in new:
                    self.phrase_cache.remove(voice_id)
                    log.info("voice %s v%d is no longer installed", voice_id, entry.version)
                self._close_voice(entry.voice, wait=False)
        self._refresh_voice_problems()
        self.events.publish("voices", {"voices": sorted(new)})

    def _load_entry(self, voice_id: str, active: Installed, enabled: bool) -> VoiceEntry:
        details = active.manifest.voice
        assert details is not None
        entry = VoiceEntry(voice_id, active, details, enabled)
        if not enabled:
            entry.reason = (
                f"consent ended on {details.consent.valid_until}; provision a pack with "
                "renewed consent"
            )
            log.warning("voice %s v%d is disabled: %s", voice_id, active.version, entry.reason)
            return entry
        buttons = [b.phrase for b in self.config.buttons if b.voice == voice_id and b.phrase]
        try:
            if not (entry.phrases_dir / "index.json").exists():
                self._precache(entry)
            entry.problems += self.phrase_cache.add_version(
                voice_id, active.version, entry.phrases_dir, first=buttons
            )
        except (PhraseIndexError, OSError) as exc:
            entry.problems.append(str(exc))
            log.error("voice %s: %s", voice_id, exc)
        if entry.text_policy == "free":
            try:
                entry.voice = self._load_engine_voice(active)
            except Exception as exc:  # a voice that fails to load must not stop the others
                entry.problems.append(f"free text unavailable: {exc}")
                log.exception("voice %s: loading for free text failed", voice_id)
        return entry

    def _load_engine_voice(self, active: Installed, *, warm: bool = True) -> Any:
        from appliance.say import export_on_demand
        from engines.voice import Voice
        from provisioning.provision import box_helpers

        voice = Voice.load(
            active.voice_folder,
            helpers=box_helpers(self.state),
            backend=self.config.backend.name,
            export=export_on_demand,
        )
        try:
            if warm:
                voice.warm()
        except BaseException:
            voice.close()
            raise
        return voice

    def _precache(self, entry: VoiceEntry) -> None:
        """A version without cached phrases (installed by an older firmware, or a cache
        that was deleted): the build step makes them now (what `kiosk provision` does
        before activating a version), before the kiosk says READY."""
        from appliance.say import export_on_demand
        from provisioning.precache_jobs import BuildSettings, build_version
        from provisioning.provision import box_helpers

        active = entry.installed
        self._status(f"caching the phrases of {entry.id} v{entry.version} (first start)")
        line, _changed = build_version(
            self.state.root,
            active.folder,
            active.manifest,
            active.manifest_sha256,
            settings=BuildSettings(backend=self.config.provisioning.backend, progress=False),
            helpers=box_helpers(self.state),
            export=export_on_demand,
        )
        log.info("voice %s v%d: %s", entry.id, entry.version, line)

    def _close_voice(self, voice: Any, *, wait: bool) -> None:
        """Free a voice's models; one still speaking is closed when it has finished."""
        if voice is None:
            return

        def close() -> None:
            try:
                voice.close()
            except Exception:
                log.exception("closing voice %s failed", getattr(voice, "voice_id", "?"))

        if wait:
            close()
        else:
            threading.Thread(target=close, name="kiosk-voice-close", daemon=True).start()

    def _refresh_voice_problems(self) -> None:
        for key in [k for k in self.problems if k.startswith("voice:")]:
            del self.problems[key]
        for entry in self.voices.values():
            if entry.problems:
                self.problems[f"voice:{entry.id}"] = f"{entry.id}: " + "; ".join(entry.problems)
        for problem in self.phrase_cache.problems():
            log.debug("phrase cache problem: %s", problem)

    def entry(self, voice_id: Any) -> VoiceEntry:
        if not isinstance(voice_id, str) or not voice_id:
            raise KioskError("give the voice id as a string (see GET /api/voices)")
        entry = self.voices.get(voice_id)
        if entry is None:
            known = ", ".join(sorted(self.voices)) or "none installed"
            raise NotFoundError(f"no voice {voice_id!r} (voices: {known})")
        return entry

    def voices_view(self) -> dict[str, Any]:
        """`GET /api/voices` (shape in appliance/README.md)."""
        out = []
        for entry in sorted(self.voices.values(), key=lambda e: e.id):
            d = entry.details
            manifest = entry.installed.manifest
            phrases = []
            for p in d.phrases:
                item = self.phrase_cache.item(entry.id, "synthetic", p.id)
                phrases.append(
                    {
                        "id": p.id,
                        "label_zh": p.label_zh,
                        "label_en": p.label_en,
                        "text": p.text,
                        "lang": p.lang,
                        "button": p.button,
                        "seconds": round(item.seconds, 3) if item else None,
                    }
                )
            archival = []
            for a in d.archival:
                stem = Path(a.path).stem
                item = self.phrase_cache.item(entry.id, "archival", stem)
                archival.append(
                    {
                        "id": stem,
                        "title": a.title,
                        "seconds": round(item.seconds, 3) if item else None,
                    }
                )
            out.append(
                {
                    "id": entry.id,
                    "version": entry.version,
                    "display_name": {
                        "zh": manifest.display_name_zh,
                        "en": manifest.display_name_en,
                    },
                    "bio": d.bio.to_json() if d.bio else None,
                    "portrait": f"/api/voices/{entry.id}/portrait" if d.portrait else None,
                    "text_policy": entry.text_policy,
                    "free_text": entry.free_text,
                    "enabled": entry.enabled,
                    "disclosure": entry.disclosure(),
                    "phrases": phrases,
                    "archival": archival,
                }
            )
        return {"voices": out, "free_text": {"max_chars": self.text_policy.max_chars}}

    def portrait(self, voice_id: str) -> tuple[bytes, str]:
        """(bytes, MIME type) of a voice's portrait."""
        entry = self.entry(voice_id)
        rel = entry.details.portrait
        if not rel:
            raise NotFoundError(f"voice {voice_id} has no portrait")
        path = entry.installed.pack / rel
        suffix = path.suffix.lower()
        mime = {
            ".png": "image/png",
            ".jpg": "image/jpeg",
            ".jpeg": "image/jpeg",
            ".webp": "image/webp",
        }.get(suffix, "application/octet-stream")
        return path.read_bytes(), mime

    # --- playing ----------------------------------------------------------------------

    def _is_open(self) -> bool:
        if self.schedule is None:
            return True
        state = self.schedule.state
        return True if state is None else bool(state.open)

    def play(
        self,
        voice: str,
        phrase: str | None = None,
        archival: str | None = None,
        *,
        source: str,
        button: str | None = None,
        requested_ns: int | None = None,
        when_playing: str | None = None,
    ) -> int:
        """Play a cached phrase or an archival recording; returns the utterance number."""
        requested_ns = requested_ns or time.monotonic_ns()
        self._check_playable(voice, phrase, archival, source)
        entry = self.voices[voice]
        kind, item_id = ("synthetic", phrase) if phrase is not None else ("archival", archival)
        assert item_id is not None
        samples = self.phrase_cache.samples(voice, kind, item_id)
        number = next(self._numbers)
        info = self._info(number, entry, kind, item_id, samples.size / self.phrase_cache.rate)
        self.last_press = {
            "source": source,
            "button": button,
            "voice": voice,
            "item": item_id,
            "time": time.time(),
        }
        self._hand_to_player(
            samples,
            info,
            source=source,
            button=button,
            requested_ns=requested_ns,
            policy=when_playing or self.config.audio.when_playing,
        )
        return number

    def _info(
        self, number: int, entry: VoiceEntry, kind: str, item_id: str, seconds: float
    ) -> dict[str, Any]:
        label_zh = label_en = item_id
        if kind == "synthetic":
            p = next((p for p in entry.details.phrases if p.id == item_id), None)
            if p is not None:
                label_zh, label_en = p.label_zh, p.label_en
        elif kind == "archival":
            a = next((a for a in entry.details.archival if Path(a.path).stem == item_id), None)
            if a is not None:
                label_zh = label_en = a.title
        info: dict[str, Any] = {
            "utterance": number,
            "voice": entry.id,
            "version": entry.version,
            "kind": "archival" if kind == "archival" else "synthetic",
            "label_zh": label_zh,
            "label_en": label_en,
            "disclosure": None if kind == "archival" else entry.disclosure(),
            "seconds": round(seconds, 3),
        }
        if kind == "synthetic":
            info["phrase"] = item_id
        elif kind == "archival":
            info["archival"] = item_id
        return info

    def say(self, voice: str, text: Any, *, source: str) -> int:
        """Queue free text for a voice whose consent allows it; returns the utterance number.

        Raises TextRefused (curated or disabled voice, 403) or a ValueError (bad text, 400)."""
        requested_ns = time.monotonic_ns()
        entry = self.entry(voice)
        consent = entry.details.consent
        if not entry.enabled:
            raise TextRefused(f"voice {voice} is disabled: {entry.reason}")
        if entry.text_policy != "free":
            raise TextRefused(
                f"voice {voice} is curated: its consent ({consent.authorised_by}, "
                f"{consent.relation}, {consent.date}) allows only its listed phrases, not free "
                "text"
            )
        if entry.voice is None:
            raise TextRefused(
                f"voice {voice} cannot say free text now: " + "; ".join(entry.problems)
            )
        if source != "tech" and not self._is_open():
            raise UnavailableError("the museum is closed now (see [schedule]); nothing plays")
        text = self.text_policy.check(text)
        number = next(self._numbers)
        job = _SayJob(number, entry, text, source, requested_ns)
        try:
            self._say_queue.put_nowait(job)
        except queue.Full:
            raise UnavailableError(
                "the voice is busy with other texts; try again in a moment"
            ) from None
        self.events.publish(
            "synthesizing",
            {
                "utterance": number,
                "voice": voice,
                "kind": "synthetic",
                "text": text,
                "disclosure": entry.disclosure(),
            },
        )
        return number

    def stop(self) -> None:
        """Fade out what plays, drop what is queued, cancel a synthesis."""
        current = self._current_say
        if current is not None:
            current.cancel.set()
        while True:
            try:
                job = self._say_queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel.set()
        if self.player is not None:
            self.player.stop()

    # --- the synthesis worker -----------------------------------------------------

    def _synthesis_loop(self) -> None:
        while not self._closing.is_set():
            self._synthesis_beat.beat()
            try:
                job = self._say_queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if job is None:
                return
            if job.cancel.is_set():
                continue
            self._current_say = job
            try:
                self._speak(job)
            except Exception as exc:
                log.exception("free text for %s failed", job.entry.id)
                self._error("synthesis", f"{job.entry.id}: {exc}")
                self.events.publish(
                    "finished",
                    {"utterance": job.utterance, "voice": job.entry.id, "reason": "error"},
                )
            finally:
                self._current_say = None
                self._synthesis_beat.beat()

    def _speak(self, job: _SayJob) -> None:
        from engines.streaming import StreamSettings

        voice = job.entry.voice
        if voice is None:
            raise RuntimeError("the voice was unloaded")
        options = voice.options()
        if self.free_text_max_tokens:
            options = replace(options, max_new_tokens=self.free_text_max_tokens)
        key = voice.phrase_key(job.text, options=options)
        info = self._info(job.utterance, job.entry, "text", "", 0.0)
        info["kind"] = "synthetic"
        info["text"] = job.text
        info["label_zh"] = info["label_en"] = job.text
        cached = self.free_cache.get(key)
        if cached is not None:
            samples, rate = cached
            samples = self._to_device_rate(samples, rate)
            info["seconds"] = round(samples.size / self.phrase_cache.rate, 3)
            policy = "queue" if self.config.audio.when_playing == "queue" else "interrupt"
            self._hand_to_player(
                samples,
                info,
                source=job.source,
                button=None,
                requested_ns=job.requested_ns,
                policy=policy,
            )
            return
        if "synthesis-hang" in self.faults:
            log.warning("fault injection: the synthesis of utterance %d hangs", job.utterance)
            threading.Event().wait()
        stream = self._open_stream_clip(info, job)
        pieces: list[np.ndarray] = []
        chunks = voice.stream(job.text, options=options, streaming=StreamSettings())
        try:
            for chunk in chunks:
                self._synthesis_beat.beat()
                if job.cancel.is_set() or self._closing.is_set() or stream.cancelled:
                    break
                pieces.append(chunk.samples)
                stream.push(chunk.samples, chunk.sample_rate)
            else:
                stream.finish()
                whole = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
                if whole.size:
                    self.free_cache.put(key, whole, voice.sample_rate)
                return
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()
        stream.abort()

    def _to_device_rate(self, samples: np.ndarray, rate: int) -> np.ndarray:
        from appliance.audio.resample import resample

        return resample(samples, rate, self.phrase_cache.rate)

    # --- the player (appliance.audio.player) ------------------------------------------

    def _open_player(self) -> None:
        """Open the configured output (a missing device: a clear status, retried in the
        background) and start the player on it."""
        from appliance.audio.outputs import make_output
        from appliance.audio.player import Player

        a = self.config.audio
        try:
            output = make_output(
                a.output, sample_rate=a.sample_rate, blocksize=a.blocksize, latency=a.latency
            )
        except (ValueError, OSError) as exc:
            self._problem("audio", f"audio output {a.output!r}: {exc}; playing into null")
            output = make_output("null", sample_rate=a.sample_rate, blocksize=a.blocksize)
        self.player = Player(
            output,
            fade_ms=a.fade_ms,
            gain_cap=a.gain_cap,
            volume=a.volume,
            on_event=self._on_player_event,
        )
        self.player.start()
        wait = getattr(output, "wait_until_open", None)
        if callable(wait) and not wait(5.0):
            log.error("audio output %s did not open; retrying in the background", output.name)
        self.supervisor.register_probe("audio", AUDIO_STALL_SECONDS, self._audio_last_seen)

    def _audio_last_seen(self) -> float | None:
        """When the audio callback last ran (None while the device is being retried: that
        has its own status, and a restart would not bring the device back)."""
        if self.player is None:
            return None
        status = self.player.output.status()
        if not status.ok:
            return None
        last = max(status.last_callback_ns, self.player.heartbeat_ns)
        return last / 1e9 if last else None

    def _hand_to_player(
        self,
        samples: np.ndarray,
        info: dict[str, Any],
        *,
        source: str,
        button: str | None,
        requested_ns: int,
        policy: str,
    ) -> None:
        from appliance.audio.player import Clip

        meta = {**info, "source": source, "button": button}
        uid = self.player.play(Clip(samples, meta), when_playing=policy, requested_ns=requested_ns)
        if uid is None:
            self._record_play(meta, "ignored", None)
            raise UnavailableError(
                "something is playing and [audio] when_playing is ignore; "
                "try again when it has finished"
            )

    def _open_stream_clip(self, info: dict[str, Any], job: _SayJob) -> _Stream:
        policy = "queue" if self.config.audio.when_playing == "queue" else "interrupt"
        meta = {**info, "source": job.source, "button": None}
        stream = self.player.open_stream(meta, when_playing=policy, requested_ns=job.requested_ns)
        return _Stream(stream, self.player.sample_rate)

    def _on_player_event(self, event: Any) -> None:
        """Player events -> SSE, metrics and stats (on the player's event thread)."""
        meta = dict(event.meta)
        data = {k: v for k, v in meta.items() if k not in ("source", "button", "version")}
        data["position"] = round(event.position_s, 3)
        if event.seconds is not None:
            data["seconds"] = round(event.seconds, 3)
        latency = None
        if event.first_sample_ns and event.requested_ns:
            latency = (event.first_sample_ns - event.requested_ns) / 1e9
        if self.router is not None and meta.get("button") and event.kind != "progress":
            self.router.feedback(meta["button"], event.kind == "playing")
        if event.kind == "playing":
            self.now_playing = data
            if latency is not None:
                hist = self.metrics.first_audio if "text" in meta else self.metrics.press_latency
                hist.observe(latency)
        elif event.kind == "finished":
            data["reason"] = event.reason
            if self.now_playing and self.now_playing.get("utterance") == data.get("utterance"):
                self.now_playing = None
            self._record_play(meta, event.reason or "done", latency)
            if event.reason == "error":
                self._error("audio", f"utterance {data.get('utterance')}: {event.error}")
        else:
            if self.now_playing and self.now_playing.get("utterance") == data.get("utterance"):
                self.now_playing = data
        self.events.publish(event.kind, data)

    def _record_play(self, meta: dict[str, Any], outcome: str, latency: float | None) -> None:
        kind = (
            "text"
            if "text" in meta
            else ("archival" if meta.get("kind") == "archival" else "phrase")
        )
        self.metrics.plays[(kind, str(meta.get("source")), outcome)] += 1
        if self.stats is None:
            return
        try:
            self.stats.record_play(
                voice=str(meta.get("voice")),
                kind=kind,
                item=meta.get("phrase") or meta.get("archival"),
                version=meta.get("version"),
                button=meta.get("button"),
                source=str(meta.get("source") or "web"),
                latency_ms=None if latency is None else latency * 1000,
                outcome=outcome,
            )
        except Exception:
            log.exception("stats: recording a play failed")

    def state_view(self) -> dict[str, Any]:
        """`GET /api/state`."""
        return {
            "playing": self.now_playing,
            "open": self._is_open(),
            "volume": round(self.player.gain, 3) if self.player is not None else None,
        }

    def audio_health(self) -> dict[str, Any]:
        """The output's status: `ok`, a line for a technician, underruns, restarts."""
        if self.player is None:
            return {"output": self.config.audio.output, "ok": False, "detail": "not started"}
        s = self.player.output.status()
        return {
            "output": s.name,
            "ok": s.ok,
            "detail": s.detail,
            "underruns": s.underruns,
            "restarts": s.restarts,
            "sample_rate": self.player.sample_rate,
        }

    def audio_name(self) -> str:
        return str(getattr(self.player, "name", None) or self.config.audio.output)

    def backend_name(self) -> str:
        names = sorted({e.voice.backend for e in self.voices.values() if e.voice is not None})
        return ", ".join(names) if names else f"{self.config.backend.name} (no voice loaded)"

    def set_volume(self, volume: Any) -> float:
        if isinstance(volume, bool) or not isinstance(volume, int | float):
            raise KioskError("volume must be a number from 0 to 1")
        if not 0.0 <= float(volume) <= 1.0:
            raise KioskError(f"volume {volume} is outside 0-1")
        value = min(float(volume), self.config.audio.gain_cap)
        if self.player is not None:
            value = self.player.set_gain(value)
        self.events.publish("status", {"volume": value})
        return value

    # --- inputs, schedule, browser watch ----------------------------------------------

    def _start_inputs(self) -> None:
        """The configured buttons' sources, through the router (a source that cannot run
        says so in its status; the others work)."""
        from appliance.inputs.router import Router, make_sources

        self.router = Router(
            self.config.buttons, self._act, when_playing=self.config.audio.when_playing
        )
        try:
            self.sources = make_sources(self.config, self.router.handle)
        except Exception as exc:  # the web and the other parts keep working
            self._problem("inputs", f"input sources failed to start: {exc}")
            self.sources = []
        self.router.attach(self.sources)

    def _restart_inputs(self) -> None:
        old_router, old_sources = self.router, self.sources
        for source in old_sources:
            with contextlib.suppress(Exception):
                source.close()
        if old_router is not None:
            with contextlib.suppress(Exception):
                old_router.close()
        self.problems.pop("inputs", None)
        self._start_inputs()

    def _act(self, action: Any) -> int | None:
        """What the router decided: play, stop or switch a button to the next voice."""
        if action.kind == "stop":
            self.stop()
            return None
        if action.kind == "next_voice":
            self._next_voice(action.button)
            return None
        voice = self._button_voice.get(action.button or "", action.voice)
        phrase, archival = action.phrase, action.archival
        if voice != action.voice and phrase is not None:
            phrase = self._matching_phrase(voice, action.button, phrase)
        try:
            return self.play(
                voice,
                phrase,
                archival,
                source=action.source,
                button=action.button,
                requested_ns=action.requested_ns,
                when_playing=action.when_playing,
            )
        except UnavailableError as exc:
            if action.source in ("web", "tech"):
                raise  # the HTTP handler answers with the reason
            log.info("%s: %s", action.button or action.source, exc)
        except KioskError as exc:
            if action.source in ("web", "tech"):
                raise
            log.warning("%s: %s", action.button or action.source, exc)
            self._error("inputs", f"{action.button}: {exc}")
        return None

    def _next_voice(self, button: str | None) -> None:
        """A hold with `hold = "next_voice"`: the button plays the next enabled voice."""
        if button is None:
            return
        cfg = next((b for b in self.config.buttons if b.name == button), None)
        enabled = sorted(e.id for e in self.voices.values() if e.enabled)
        if cfg is None or not enabled:
            return
        current = self._button_voice.get(button, cfg.voice)
        index = enabled.index(current) if current in enabled else -1
        chosen = enabled[(index + 1) % len(enabled)]
        self._button_voice[button] = chosen
        log.info("%s now plays voice %s", button, chosen)
        self.events.publish("status", {"button": button, "voice": chosen})

    def _matching_phrase(self, voice: str, button: str | None, phrase: str) -> str:
        """The phrase of another voice a button plays: the same id, else the one on the
        same button number, else its first phrase."""
        entry = self.voices.get(voice)
        if entry is None or any(p.id == phrase for p in entry.details.phrases):
            return phrase
        cfg = self.voices.get(self._config_voice(button))
        number = (
            next((p.button for p in cfg.details.phrases if p.id == phrase), None) if cfg else None
        )
        same = next((p.id for p in entry.details.phrases if number and p.button == number), None)
        return same or (entry.details.phrases[0].id if entry.details.phrases else phrase)

    def _config_voice(self, button: str | None) -> str:
        cfg = next((b for b in self.config.buttons if b.name == button), None)
        return cfg.voice if cfg is not None else ""

    def web_play(
        self, voice: Any, phrase: Any = None, archival: Any = None, *, source: str = "web"
    ) -> int | None:
        """A tap on the screen (or the technician's test): checked here, so a wrong request
        gets its error, then down the router's path like a button; None for a double tap."""
        self._check_playable(voice, phrase, archival, source)
        if self.router is None:
            return self.play(voice, phrase, archival, source=source)
        result = self.router.web(voice, phrase, archival, source=source)
        return result if isinstance(result, int) else None

    def _check_playable(self, voice: Any, phrase: Any, archival: Any, source: str) -> None:
        entry = self.entry(voice)
        if (phrase is None) == (archival is None):
            raise KioskError('give "phrase" or "archival" (one of them)')
        kind, item_id = ("synthetic", phrase) if phrase is not None else ("archival", archival)
        if not isinstance(item_id, str) or not item_id:
            raise KioskError("the phrase or archival id must be a non-empty string")
        if not entry.enabled:
            raise UnavailableError(f"voice {voice} is disabled: {entry.reason}")
        if source != "tech" and not self._is_open():
            raise UnavailableError("the museum is closed now (see [schedule]); nothing plays")
        if self.phrase_cache.item(entry.id, kind, item_id) is None:
            if kind == "synthetic":
                listed = [p.id for p in entry.details.phrases]
            else:
                listed = [Path(a.path).stem for a in entry.details.archival]
            noun = "phrase" if kind == "synthetic" else "recording"
            raise NotFoundError(
                f"voice {voice} has no cached {noun} {item_id!r} "
                f"(listed: {', '.join(listed) or 'none'})"
            )

    def _start_schedule(self) -> None:
        """Opening hours and volume steps, polled once a second by the housekeeping thread."""
        from appliance.schedule import Schedule, ScheduleWatcher

        try:
            schedule = Schedule(self.config.schedule, default_volume=self.config.audio.volume)
        except ValueError as exc:
            self._problem("schedule", f"schedule: {exc}; the kiosk stays open")
            self.schedule = None
            return
        self.schedule = ScheduleWatcher(schedule)
        self._poll_schedule()
        if self._housekeeping is None:
            self._housekeeping = threading.Thread(
                target=self._housekeeping_loop, name="kiosk-housekeeping", daemon=True
            )
            self._housekeeping.start()

    def _poll_schedule(self) -> None:
        watcher = self.schedule
        if watcher is None:
            return
        change = watcher.poll()
        if change is None:
            return
        after = change.after
        log.info(
            "schedule (%s): %s, volume %.2f",
            change.reason,
            "open" if after.open else "closed",
            after.volume,
        )
        if self.player is not None:
            self.player.set_gain(after.volume)
        if change.before is not None and self.stats is not None:
            with contextlib.suppress(Exception):
                self.stats.record_event("schedule", f"{change.reason}: open={after.open}")
        self.events.publish(
            "status", {"open": after.open, "volume": after.volume, "dim": after.dim}
        )

    def _housekeeping_loop(self) -> None:
        beat = self.supervisor.register("housekeeping", 30.0)
        while not self._closing.wait(1.0):
            beat.beat()
            try:
                self._poll_schedule()
            except Exception:
                log.exception("schedule poll failed")

    def _start_browser_watch(self) -> None:
        """The frozen-screen watch (restarts the browser unit): on a box, i.e. under
        systemd, or wherever `[ui] restart_command` is set; on a workstation there is
        no browser unit to restart."""
        from appliance.browser_watch import BrowserWatch
        from appliance.journal_log import under_systemd

        ui = self.config.ui
        command = list(ui.restart_command) or ["systemctl", "restart", ui.browser_unit]
        try:
            self.browser_watch = BrowserWatch(ui.heartbeat_timeout_seconds, command, self.stats)
        except ValueError as exc:
            self._problem("browser", f"browser watch: {exc}")
            return
        if under_systemd() or ui.restart_command:
            self.browser_watch.start()
        else:
            log.info("not under systemd: the browser watch counts heartbeats but restarts nothing")

    def heartbeat(self, page: str) -> None:
        if self.browser_watch is not None:
            self.browser_watch.beat(page)

    # --- health, errors ---------------------------------------------------------------

    def _problem(self, key: str, text: str) -> None:
        self.problems[key] = text
        log.error("%s", text)

    def _error(self, component: str, message: str) -> None:
        self.errors.append({"time": time.time(), "component": component, "message": message})
        del self.errors[:-20]
        if self.stats is not None:
            with contextlib.suppress(Exception):
                self.stats.record_error(component, message)

    def health(self) -> dict[str, Any]:
        """`GET /health`: `ok` when every part works, else `degraded` with the reasons."""
        stuck = self.supervisor.check()
        problems = sorted(self.problems.values()) + [f"stuck: {s}" for s in stuck]
        if self.free_cache.problem:
            problems.append(self.free_cache.problem)
        if self.text_policy.problem:
            problems.append(self.text_policy.problem)
        stats_status = self.stats.status() if self.stats is not None else None
        if stats_status is not None and not stats_status.get("ok", True):
            problems.append(f"stats: {stats_status.get('detail')}")
        audio = self.audio_health()
        if not audio.get("ok"):
            problems.append(f"audio {audio.get('output')}: {audio.get('detail')}")
        inputs = self._inputs_status()
        for source in inputs.get("sources", []):
            if not source.get("ok", True):
                problems.append(f"input {source.get('source', '?')}: {source.get('detail', '')}")
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "voices": [
                {
                    "id": e.id,
                    "version": e.version,
                    "enabled": e.enabled,
                    "free_text": e.free_text,
                    "problems": e.problems,
                    "backend": e.voice.backend if e.voice is not None else None,
                }
                for e in sorted(self.voices.values(), key=lambda e: e.id)
            ],
            "backend": self.backend_name(),
            "audio": audio,
            "inputs": inputs,
            "last_press": self.last_press,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "queue": {
                "free_text": self._say_queue.qsize(),
                "synthesizing": self._current_say is not None,
            },
            "cache": {
                "phrases": self.phrase_cache.summary(),
                "free_text_mb": round(self.free_cache.size_bytes() / 1e6, 2),
                "free_text_hits": self.free_cache.hits,
                "free_text_misses": self.free_cache.misses,
            },
            "stats": stats_status,
            "recent_errors": list(self.errors[-10:]),
            "watchdog": {
                "enabled": self.notifier.enabled,
                "pings": self.supervisor.pings,
                "stuck": stuck,
            },
            "latency": self.latency(),
            "screen": self.browser_watch.status() if self.browser_watch is not None else None,
            "reloads": self.reloads,
            "config": self.config.source,
        }

    def latency(self) -> dict[str, Any]:
        """Press (or request) to the first sample handed to the audio callback: p50 and
        p99 of the last 2000 cached plays, and of free text's first audio, in ms."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 2)

        press, text = self.metrics.press_latency, self.metrics.first_audio
        return {
            "press_p50_ms": ms(press.percentile(50)),
            "press_p99_ms": ms(press.percentile(99)),
            "presses_measured": press.count,
            "text_first_audio_p50_ms": ms(text.percentile(50)),
            "texts_measured": text.count,
        }

    def _inputs_status(self) -> dict[str, Any]:
        if self.router is None:
            return {"ok": True, "sources": []}
        try:
            return dict(self.router.status())
        except Exception as exc:
            return {"ok": False, "detail": f"status failed: {exc}", "sources": []}

    def log_tail(self, lines: int = 200) -> list[str]:
        return self.tail.tail(lines) if self.tail is not None else []

    # --- reload, rollback, remove --------------------------------------------------

    def reload(self) -> bool:
        """SIGHUP: read the config file and the voices again.  A SIGHUP during a reload
        makes that reload run once more (it may have read the state before the change);
        False when the new config is wrong (the running one stays)."""
        self._reload_pending.set()
        if not self._reload_lock.acquire(blocking=False):
            return True
        ok = True
        try:
            while self._reload_pending.is_set() and not self._closing.is_set():
                self._reload_pending.clear()
                self.notifier.reloading()
                if self.config_path is not None:
                    try:
                        new = load_config(self.config_path)
                    except ValueError as exc:
                        self._problem("config", f"config not reloaded: {exc}".splitlines()[0])
                        ok = False
                    else:
                        ok = True
                        self.problems.pop("config", None)
                        self._apply_config(new)
                self._load_voices()
                self.reloads += 1
                if self.stats is not None:
                    with contextlib.suppress(Exception):
                        self.stats.record_event("reload", f"{len(self.voices)} voice(s)")
                self.notifier.ready(self.status_line())
            return ok
        finally:
            self._reload_lock.release()

    def _apply_config(self, new: KioskConfig) -> None:
        old = self.config
        if (new.audio.output, new.audio.sample_rate) != (old.audio.output, old.audio.sample_rate):
            log.warning("[audio] output/sample_rate changed: takes effect at the next restart")
        if new.state_dir != old.state_dir or new.web != old.web:
            log.warning("state_dir / [web] changed: takes effect at the next restart")
        keep = replace(
            new,
            state_dir=old.state_dir,
            web=old.web,
            audio=replace(new.audio, output=old.audio.output, sample_rate=old.audio.sample_rate),
        )
        self.config = keep
        self.text_policy = TextPolicy(keep.free_text)
        if self.player is not None and new.audio.volume != old.audio.volume:
            self.set_volume(new.audio.volume)
        if (new.buttons, new.gpio, new.audio.when_playing) != (
            old.buttons,
            old.gpio,
            old.audio.when_playing,
        ):
            # Only then: a reload after provisioning must not reopen the pins and devices.
            log.info("buttons changed: restarting the input sources")
            self._restart_inputs()

    def rollback(self, voice: str) -> str:
        from provisioning.provision import rollback

        message = rollback(self.state, voice)
        self._reload_soon()
        return message

    def remove(self, voice: str) -> str:
        from provisioning.provision import remove

        message = remove(self.state, voice)
        self._reload_soon()
        return message

    def _reload_soon(self) -> None:
        threading.Thread(target=self.reload, name="kiosk-reload", daemon=True).start()


def today() -> dt.date:
    return dt.date.today()


__all__ = [
    "Kiosk",
    "KioskError",
    "NotFoundError",
    "TextRefused",
    "TextRejectedError",
    "UnavailableError",
]
