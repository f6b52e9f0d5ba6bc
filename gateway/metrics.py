"""Prometheus metrics of one gateway process (its own registry, no module-level state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.protocol import StoredMessage, TaskStatus
from gateway.store import StreamStore


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
        self.flush_latency = Histogram(
            "agw_store_flush_seconds",
            "Latency of one coalesced store flush",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )

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
