"""Prometheus metrics of one gateway process (its own registry, no module-level state)."""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from gateway.protocol import StoredMessage, TaskStatus
from gateway.store import StreamStore


class FlushLatency(Collector):
    """A histogram observed on the hot path (every store flush) without a lock or a call per
    bucket: a count per bucket and the sum, put together on a scrape. The same samples as
    ``prometheus_client.Histogram`` (``_bucket`` cumulative by ``le``, ``_count``, ``_sum``,
    ``_created``); one event loop observes it, so no lock is needed."""

    def __init__(self, name: str, documentation: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = (*bounds, float("inf"))
        self.counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self.sum = 0.0
        self._created = time.time()

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        buckets, total = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, self.sum)
        family.add_sample(self.name + "_created", {}, self._created)
        yield family


class GatewayMetrics:
    """Counters and gauges the gateway updates; task gauges are refreshed on each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_streams = Gauge("agw_active_streams", "Open SSE connections", registry=r)
        self.streams_total = Counter("agw_streams", "SSE connections opened", registry=r)
        self.slow_clients = Counter(
            "agw_slow_client_disconnects", "Readers cut off by the send time limit", registry=r
        )
        self.tasks = Gauge("agw_tasks", "Live tasks by status", ["status"], registry=r)
        self.queue_depth = Gauge("agw_queue_depth", "Tasks waiting for a worker", registry=r)
        self.messages = Counter("agw_messages_appended", "Messages appended to logs", registry=r)
        self._appended = 0  # counted on the hot path without the counter's lock; see render
        self.flush_latency = FlushLatency(
            "agw_store_flush_seconds",
            "Latency of one coalesced store flush",
            (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        r.register(self.flush_latency)

    def on_append(self, message: StoredMessage) -> None:
        self._appended += 1

    def _publish(self) -> None:
        appended, self._appended = self._appended, 0
        if appended:
            self.messages.inc(appended)

    def on_flush(self, seconds: float) -> None:
        self.flush_latency.observe(seconds)

    async def render(self, store: StreamStore) -> bytes:
        """Refresh the task gauges from the store and encode everything."""
        self._publish()
        for status in TaskStatus:
            count = await store.count(status)
            self.tasks.labels(status.value).set(count)
            if status is TaskStatus.PENDING:
                self.queue_depth.set(count)
        return bytes(generate_latest(self.registry))
