"""``RedisStore``: the durable, multi-replica store (DESIGN §7).

Keys (the task id is the hash tag, so Redis Cluster works; ``agw`` is the default prefix):
``agw:{id}:state`` (hash), ``agw:{id}:log`` (a Redis Stream whose entry ids are ``<seq>-0``),
``agw:idem:{key}`` (idempotency), ``agw:idx:<STATUS>`` and ``agw:idx:all`` (sorted sets for
listing), ``agw:queue`` (a Redis Stream read by the consumer group ``agw-workers``). Task keys
expire ``result_ttl`` after the end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.store import _scripts
from gateway.store._lane import Lane
from gateway.store._limits import RedisLimits
from gateway.store._outbox import RedisOutbox
from gateway.store._recent import RecentLogs
from gateway.store._redis_log import LogMixin
from gateway.store._redis_parts import SOCKET_TIMEOUT, _Keys, _messages
from gateway.store._redis_queue import QueueMixin
from gateway.store._redis_records import RecordsMixin
from gateway.store._retention import RedisRetention
from gateway.store._writer import Flusher
from gateway.store.base import StoreUnavailable

logger = logging.getLogger(__name__)

UNREACHABLE: tuple[type[Exception], ...] = (
    StoreUnavailable,
    RedisConnectionError,
    RedisTimeoutError,
)
"""What a store call raises when Redis cannot be reached (the API answers 503, not 500)."""


class RedisStore(RecordsMixin, LogMixin, QueueMixin):
    """``StreamStore`` over Redis with coalesced writes and in-memory wake-ups for local readers.

    Its parts: task records and listing indexes (``_redis_records``), task logs
    (``_redis_log``), the queue and leases (``_redis_queue``), over the state and command runs
    they share (``_redis_core``)."""

    def __init__(
        self,
        url: str,
        *,
        result_ttl: int = 86_400,
        flush_interval: float = 0.0,
        flush_spacing: float = 0.0,
        prefix: str = "agw",
        cluster: bool = False,
        max_connections: int = 2048,
        on_flush: Callable[[float], None] | None = None,
        log_max_bytes: int = 0,
    ) -> None:
        self.url = url
        self.result_ttl = int(result_ttl)
        self._k = _Keys(prefix)
        self.outbox = self._outbox = RedisOutbox(self._commands, prefix, self.result_ttl)
        self._cluster = cluster
        self._client = (
            RedisCluster.from_url(
                url, socket_timeout=SOCKET_TIMEOUT, max_connections=max_connections
            )
            if cluster
            else aioredis.Redis.from_url(
                url,
                health_check_interval=30,
                socket_timeout=SOCKET_TIMEOUT,
                max_connections=max_connections,
            )
        )
        self._append = self._client.register_script(_scripts.APPEND)
        self._renew = self._client.register_script(_scripts.RENEW)
        self._retention = RedisRetention(
            self._client, self._k.task, _messages, log_max_bytes, self._trimmed, self._written
        )
        self._writers = {}
        # Finished here: replayed from memory for a while (never longer than Redis keeps them).
        self._recent = RecentLogs()
        self._group_ready = False
        self._read_entries = []
        self._followers = {}
        self._ending = {}
        # The hot commands' own connection (none on a cluster or over TLS: redis-py then).
        self._lane = None if cluster else Lane.for_pool(self._pool, SOCKET_TIMEOUT)
        self.limits = RedisLimits(self._commands, prefix, cluster=cluster)
        self._flusher = Flusher(
            self._client,
            self._append,
            self._k.task,
            on_flush or (lambda _seconds: None),
            self._sealed,
            self._finished,
            flush_interval,
            one_call=not cluster,
            lane=self._lane,
            spacing=flush_spacing,
        )

    @property
    def _pool(self) -> Any:
        return self._client.connection_pool

    async def start(self) -> None:
        """Start the flusher; an unreachable Redis is logged, not fatal (``/readyz`` fails)."""
        self._flusher.start()
        try:
            await self._ensure_group()
        except StoreUnavailable as exc:
            logger.error("Redis is unreachable at start (%s); retrying in the background", exc)

    async def close(self) -> None:
        followers = [f.task for f in self._followers.values() if f.task is not None]
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        await self._flusher.close()
        await self._retention.close()
        await self._client.aclose()

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    def __repr__(self) -> str:
        return f"RedisStore(flush_interval={self._flusher._interval}, writers={len(self._writers)})"
