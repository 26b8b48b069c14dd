"""`EventHub`: what the kiosk does, fanned out to every open `/api/events` stream.

Each subscriber gets its own bounded queue; a slow or vanished browser loses
its oldest events (and is told so by a `status` event) instead of holding up
the audio path that publishes them.  `close()` ends every stream, so the web
server's threads are free when the daemon stops.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator
from typing import Any

#: Events a subscriber may lag behind before its oldest are dropped.
QUEUE_SIZE = 256
#: Seconds between keep-alive comments on an idle stream (proxies and browsers close
#: silent connections; it also lets a stream notice that the hub closed).
KEEPALIVE_SECONDS = 15.0

_CLOSED = object()


class Subscription:
    """One stream's queue; iterate for `(name, data)` pairs, `None` meaning "keep-alive"."""

    def __init__(self, hub: EventHub, number: int) -> None:
        self.hub = hub
        self.number = number
        self.queue: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
        self.dropped = 0

    def put(self, item: Any) -> None:
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def events(self, keepalive: float = KEEPALIVE_SECONDS) -> Iterator[tuple[str, Any] | None]:
        try:
            while True:
                try:
                    item = self.queue.get(timeout=keepalive)
                except queue.Empty:
                    if self.hub.closed:
                        return
                    yield None
                    continue
                if item is _CLOSED:
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self.hub._remove(self)


class EventHub:
    """Publish from any thread; `subscribe()` for a stream of events."""

    def __init__(self) -> None:
        self._subs: dict[int, Subscription] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self.closed = False
        self.published = 0

    def subscribe(self) -> Subscription:
        sub = Subscription(self, next(self._numbers))
        with self._lock:
            if self.closed:
                sub.put(_CLOSED)
            else:
                self._subs[sub.number] = sub
        return sub

    def publish(self, name: str, data: Any) -> None:
        with self._lock:
            subs = list(self._subs.values())
            self.published += 1
        for sub in subs:
            sub.put((name, data))

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.pop(sub.number, None)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        """End every stream (at shutdown)."""
        with self._lock:
            self.closed = True
            subs = list(self._subs.values())
            self._subs.clear()
        for sub in subs:
            sub.put(_CLOSED)
