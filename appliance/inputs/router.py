"""From input events to what the kiosk should do: the one path every press takes.

`Router.handle(event)` is the `emit` every source calls; the touch screen's
presses come through `Router.web(...)`, so a GPIO button, an arcade encoder,
a keyboard key and a tap on the screen share cooldown, logging and the same
`Action` the daemon acts on.

- A press plays the button's phrase (or archival recording) at once.
- A press closer than the button's `cooldown_ms` to its last accepted press
  is ignored (visitors hammer buttons; children more so).
- Holding for `hold_seconds` does the button's second action (`stop` or
  `next_voice`), timed here for every source that only reports press and
  release; sources that know a hold themselves emit `hold`.  The hold counts
  even when its press fell in the cooldown: holding to stop must always work.
- What happens when something is already playing (`interrupt`, `queue`,
  `ignore`) is decided by the daemon, which knows what plays; the router puts
  the button's policy (or `[audio] when_playing`) on the action.
- LEDs: the daemon calls `feedback(button, playing)`; the router passes it to
  the source that drives that button's LED.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from appliance.inputs.base import Emit, InputSource
from appliance.inputs.events import InputEvent

if TYPE_CHECKING:
    from appliance.config import ButtonConfig, KioskConfig

log = logging.getLogger("kiosk.inputs")

ActionKind = Literal["play", "stop", "next_voice"]
#: `Router.web` presses closer than this (same voice and item) are one press.
WEB_COOLDOWN_MS = 300


@dataclass(frozen=True, slots=True)
class Action:
    """What the kiosk should do because of one press."""

    kind: ActionKind
    """`play` the item, `stop` what plays, or switch to the `next_voice`."""
    voice: str | None
    """The voice id (the button's voice; None for a stop from the screen)."""
    phrase: str | None
    """Cached phrase id to play (None for archival, stop, next_voice)."""
    archival: str | None
    """Archival recording id to play instead of a phrase."""
    button: str | None
    """The button's name; None for the touch screen."""
    source: str
    """`gpio`, `jetson`, `evdev`, `keyboard`, `web` (or `tech` for a technician's test)."""
    when_playing: str
    """`interrupt`, `queue` or `ignore`: what to do if something is playing."""
    requested_ns: int
    """`time.monotonic_ns()` of the press: press-to-sound latency starts here."""


@dataclass
class _Button:
    config: ButtonConfig
    last_accepted_ns: int | None = None
    down_ns: int | None = None
    down_source: str = ""
    hold_fired: bool = False


class Router:
    """Maps `InputEvent`s to `Action`s for the configured buttons; thread-safe.

    `act` is called outside the router's lock, from the thread that delivered
    the event (a source's reader thread, gpiozero's callback thread, the hold
    timer, or an HTTP handler); its exceptions are logged, never passed back
    into a source.
    """

    def __init__(
        self,
        buttons: Sequence[ButtonConfig],
        act: Callable[[Action], Any],
        clock: Callable[[], int] = time.monotonic_ns,
        *,
        when_playing: str = "interrupt",
        web_cooldown_ms: int = WEB_COOLDOWN_MS,
        hold_thread: bool = True,
    ) -> None:
        self._act = act
        self._clock = clock
        self._default_policy = when_playing
        self._web_cooldown_ns = web_cooldown_ms * 1_000_000
        self._buttons = {b.name: _Button(b) for b in buttons}
        self._web_last: dict[tuple[str, str | None, str | None], int] = {}
        self._lock = threading.Condition()
        self._holds: list[tuple[int, str, int]] = []  # (deadline_ns, button, down_ns)
        self._sources: list[InputSource] = []
        self.counts = {
            "presses": 0,
            "actions": 0,
            "cooled_down": 0,
            "holds": 0,
            "unknown_button": 0,
            "act_errors": 0,
        }
        self._closed = False
        self._thread: threading.Thread | None = None
        if hold_thread:
            self._thread = threading.Thread(target=self._hold_loop, name="kiosk-holds", daemon=True)
            self._thread.start()

    # -- the sources' emit -------------------------------------------------

    def handle(self, event: InputEvent) -> None:
        """The `emit` of every source: one press, hold or release of one button."""
        actions: list[Action] = []
        with self._lock:
            state = self._buttons.get(event.button)
            if state is None:
                self.counts["unknown_button"] += 1
                log.warning("input from %s for unknown button %r", event.source, event.button)
                return
            cfg = state.config
            if event.action == "press":
                # A press while "down" means a release went missing (sources pair them,
                # but a lost edge must not lock the button): it is a new press.
                self.counts["presses"] += 1
                state.down_ns, state.down_source, state.hold_fired = (
                    event.at_ns,
                    event.source,
                    False,
                )
                if cfg.hold is not None:
                    deadline = event.at_ns + int(cfg.hold_seconds * 1e9)
                    heapq.heappush(self._holds, (deadline, cfg.name, event.at_ns))
                    self._lock.notify()
                last = state.last_accepted_ns
                if last is not None and event.at_ns - last < cfg.cooldown_ms * 1_000_000:
                    self.counts["cooled_down"] += 1
                    log.debug("%s: press within %d ms cooldown, ignored", cfg.name, cfg.cooldown_ms)
                else:
                    state.last_accepted_ns = event.at_ns
                    actions.append(self._play(cfg, event.source, event.at_ns))
            elif event.action == "release":
                state.down_ns = None  # a pending hold of this press no longer fires
            else:  # a hold the source timed itself
                state.down_ns = None
                hold = self._hold_action(cfg, event.source, event.at_ns)
                if hold is not None:
                    actions.append(hold)
        for action in actions:
            self._do(action)

    def _play(self, cfg: ButtonConfig, source: str, at_ns: int) -> Action:
        return Action(
            kind="play",
            voice=cfg.voice,
            phrase=cfg.phrase,
            archival=cfg.archival,
            button=cfg.name,
            source=source,
            when_playing=cfg.when_playing or self._default_policy,
            requested_ns=at_ns,
        )

    def _hold_action(self, cfg: ButtonConfig, source: str, at_ns: int) -> Action | None:
        if cfg.hold is None:
            return None
        self.counts["holds"] += 1
        return Action(
            kind=cfg.hold,  # type: ignore[arg-type]  # "stop" | "next_voice", checked by config
            voice=cfg.voice,
            phrase=None,
            archival=None,
            button=cfg.name,
            source=source,
            when_playing="interrupt",
            requested_ns=at_ns,
        )

    def _do(self, action: Action) -> Any:
        with self._lock:
            self.counts["actions"] += 1
        try:
            return self._act(action)
        except Exception:
            with self._lock:
                self.counts["act_errors"] += 1
            log.exception("acting on %s failed", action)
            return None

    # -- holds -------------------------------------------------------------

    def check_holds(self, now_ns: int | None = None) -> int:
        """Fire the holds due by `now_ns` (the hold thread calls this); returns how many."""
        now_ns = self._clock() if now_ns is None else now_ns
        due: list[Action] = []
        with self._lock:
            while self._holds and self._holds[0][0] <= now_ns:
                deadline, name, down_ns = heapq.heappop(self._holds)
                state = self._buttons[name]
                if state.down_ns != down_ns or state.hold_fired:
                    continue  # released (or pressed anew) before the deadline
                state.hold_fired = True
                action = self._hold_action(state.config, state.down_source, deadline)
                if action is not None:
                    due.append(action)
        for action in due:
            self._do(action)
        return len(due)

    def _hold_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._holds:
                    self._lock.wait()
                if self._closed:
                    return
                wait_s = (self._holds[0][0] - self._clock()) / 1e9
                if wait_s > 0:
                    self._lock.wait(wait_s)
                    continue
            self.check_holds()

    # -- the touch screen and the technician page ---------------------------

    def web(
        self,
        voice: str,
        phrase: str | None = None,
        archival: str | None = None,
        *,
        source: str = "web",
        when_playing: str | None = None,
    ) -> Any:
        """A press on the touch screen: the same `Action` path as a button.

        Returns what `act` returned (the daemon's utterance number), or None
        when the same item was pressed less than `WEB_COOLDOWN_MS` ago (a
        double tap); `act`'s exceptions reach the caller.  A technician's
        test (`source="tech"`) has no cooldown.
        """
        if (phrase is None) == (archival is None):
            raise ValueError("give exactly one of phrase or archival")
        now = self._clock()
        key = (voice, phrase, archival)
        with self._lock:
            self.counts["presses"] += 1
            last = self._web_last.get(key)
            if source != "tech" and last is not None and now - last < self._web_cooldown_ns:
                self.counts["cooled_down"] += 1
                return None
            self._web_last[key] = now
            self.counts["actions"] += 1
        # An HTTP handler is the caller: the daemon's errors go back to it (and to the
        # screen as a 4xx), unlike a source's, which are only logged.
        return self._act(
            Action(
                kind="play",
                voice=voice,
                phrase=phrase,
                archival=archival,
                button=None,
                source=source,
                when_playing=when_playing or self._default_policy,
                requested_ns=now,
            )
        )

    def stop(self, source: str = "web") -> Any:
        """The screen's stop: an `Action(kind="stop")` down the same path."""
        return self._do(Action("stop", None, None, None, None, source, "interrupt", self._clock()))

    # -- LEDs and status ----------------------------------------------------

    def attach(self, sources: Iterable[InputSource]) -> None:
        """The sources whose LEDs `feedback` drives and whose status `status` reports."""
        self._sources.extend(sources)

    def feedback(self, button: str | None, playing: bool) -> bool:
        """Light (or clear) `button`'s LED while its phrase plays; False: it has none."""
        if button is None:
            return False
        for source in self._sources:
            try:
                if source.set_led(button, playing):
                    return True
            except Exception:
                log.exception("LED of %s", button)
        return False

    def leds_off(self) -> None:
        """Every LED off (after a stop, or when the box closes)."""
        for name in self._buttons:
            self.feedback(name, False)

    def status(self) -> dict[str, Any]:
        """{"ok", "counts", "sources": [each source's status]}; ok: every source is ok."""
        sources = [s.status() for s in self._sources]
        with self._lock:
            counts = dict(self.counts)
        return {"ok": all(s["ok"] for s in sources), "counts": counts, "sources": sources}

    def close(self) -> None:
        """Stop the hold timer (the sources are closed by their owner)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(2)


def make_sources(config: KioskConfig, emit: Emit) -> list[InputSource]:
    """Build and start one source per kind (one per evdev device) for `config.buttons`.

    Starting never raises: a source that cannot run says so in its status and
    the others work.
    """
    buttons = list(config.buttons)
    sources: list[InputSource] = []
    gpio = [b for b in buttons if b.source == "gpio"]
    if gpio:
        from appliance.inputs.gpio import GpioSource

        sources.append(GpioSource(gpio, config.gpio))
    jetson = [b for b in buttons if b.source == "jetson"]
    if jetson:
        from appliance.inputs.jetson import JetsonSource

        sources.append(JetsonSource(jetson, config.gpio))
    devices: dict[str, list[ButtonConfig]] = {}
    for b in buttons:
        if b.source == "evdev":
            devices.setdefault(b.device or "", []).append(b)
    if devices:
        from appliance.inputs.evdev_input import EvdevSource

        sources.extend(EvdevSource(device, group) for device, group in devices.items())
    keyboard = [b for b in buttons if b.source == "keyboard"]
    if keyboard:
        from appliance.inputs.keyboard import KeyboardSource

        sources.append(KeyboardSource(keyboard))
    for source in sources:
        try:
            source.start(emit)
        except Exception as exc:  # a source's own bug must not stop the others
            log.exception("starting %s failed", source.kind)
            if hasattr(source, "_set_status"):
                source._set_status(False, f"failed to start: {exc}")
    return sources
