"""`GET /metrics`: the kiosk's figures in Prometheus text, read at scrape time.

Each Kiosk has its own registry (a test may run several in one process), and
the figures are kept as plain counters and a latency histogram in
`KioskMetrics`, which the audio path updates without locks or allocation;
the collector turns them into metric families when a scraper asks.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

#: Press -> first sample buckets, seconds (the target is 20 ms at p99).
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

_REGISTRIES: dict[int, CollectorRegistry] = {}
_LOCK = threading.Lock()


class Histogram:
    """Cumulative buckets of one latency, plus a ring of recent values for percentiles."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS, keep: int = 2000) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.recent: list[float] = []
        self.keep = keep

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.recent.append(seconds)
        if len(self.recent) > self.keep:
            del self.recent[: len(self.recent) - self.keep]

    @property
    def count(self) -> int:
        return sum(self.counts)

    def percentile(self, q: float) -> float | None:
        values = sorted(self.recent)
        if not values:
            return None
        return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


class KioskMetrics:
    """What /metrics reports, updated by the kiosk."""

    def __init__(self) -> None:
        self.plays: Counter[tuple[str, str, str]] = Counter()  # (kind, source, outcome)
        self.refused: Counter[str] = Counter()  # reason kind
        self.errors: Counter[str] = Counter()  # component
        self.press_latency = Histogram()
        self.first_audio = Histogram()
        self.started = time.time()


class _Collector(Collector):
    def __init__(self, kiosk: Any) -> None:
        self.kiosk = kiosk

    def collect(self) -> Iterator[Any]:
        k = self.kiosk
        m: KioskMetrics = k.metrics
        plays = CounterMetricFamily(
            "kiosk_plays",
            "Utterances played, by kind, source and outcome",
            labels=["kind", "source", "outcome"],
        )
        for (kind, source, outcome), n in sorted(m.plays.items()):
            plays.add_metric([kind, source, outcome], n)
        yield plays
        refused = CounterMetricFamily(
            "kiosk_requests_refused", "Refused requests", labels=["reason"]
        )
        for reason, n in sorted(m.refused.items()):
            refused.add_metric([reason], n)
        yield refused
        errors = CounterMetricFamily("kiosk_errors", "Errors by part", labels=["component"])
        for component, n in sorted(m.errors.items()):
            errors.add_metric([component], n)
        yield errors
        for name, text, hist in (
            (
                "kiosk_press_to_first_sample_seconds",
                "Press (or request) to the first sample handed to the audio callback",
                m.press_latency,
            ),
            (
                "kiosk_text_to_first_audio_seconds",
                "Free text: request to the first sample handed to the audio callback",
                m.first_audio,
            ),
        ):
            family = HistogramMetricFamily(name, text)
            cumulative, buckets = 0, []
            for bound, n in zip(hist.buckets, hist.counts, strict=False):
                cumulative += n
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", hist.count))
            family.add_metric([], buckets, sum_value=hist.total)
            yield family
        health = k.health()
        yield GaugeMetricFamily(
            "kiosk_up",
            "1 when every part works, 0 when degraded",
            value=1.0 if health["status"] == "ok" else 0.0,
        )
        yield GaugeMetricFamily(
            "kiosk_uptime_seconds", "Seconds since start", value=health["uptime_s"]
        )
        voices = GaugeMetricFamily("kiosk_voices", "Installed voices", labels=["state"])
        enabled = sum(1 for v in health["voices"] if v["enabled"])
        voices.add_metric(["enabled"], enabled)
        voices.add_metric(["disabled"], len(health["voices"]) - enabled)
        yield voices
        cache = health["cache"]["phrases"]
        yield GaugeMetricFamily(
            "kiosk_phrase_cache_ram_bytes",
            "Cached phrase audio in RAM",
            value=float(cache["ram_mb"]) * 1e6,
        )
        yield CounterMetricFamily(
            "kiosk_watchdog_pings", "WATCHDOG=1 sent", value=health["watchdog"]["pings"]
        )
        yield GaugeMetricFamily(
            "kiosk_free_text_queue", "Free texts waiting", value=health["queue"]["free_text"]
        )
        yield CounterMetricFamily(
            "kiosk_reloads", "Config and voice reloads", value=health["reloads"]
        )


def registry_for(kiosk: Any) -> CollectorRegistry:
    """The registry of one kiosk (made on first use)."""
    with _LOCK:
        registry = _REGISTRIES.get(id(kiosk))
        if registry is None or getattr(registry, "_kiosk", None) is not kiosk:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Collector(kiosk))
            registry._kiosk = kiosk  # type: ignore[attr-defined]
            _REGISTRIES[id(kiosk)] = registry
        return registry
