"""Deployment-wide limits kept by the store: token buckets per client and the queue bound.

``store.limits.take(key, rate, burst)`` takes a token from ``key``'s bucket: 0.0 when granted,
else the seconds until one is available. ``MemoryStore`` keeps its buckets in this process
(:class:`MemoryLimits`); ``RedisStore`` keeps them in Redis (:class:`RedisLimits`), one script
call per check timed by Redis's clock, so N replicas together grant what one would. Should Redis
be unreachable, each replica falls back to its own buckets until it answers again (a request
is not refused because the limit cannot be counted; the routes answer 503 anyway).

The queue bound (``create(..., queue=True, max_queued=N)``) is checked by each store with the
create itself: ``RedisStore`` runs the create's writes in :data:`~gateway.store._scripts.IF_BELOW`
(the count of PENDING tasks and the writes in one atomic call) through
:meth:`RedisLimits.admit`.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from gateway.store import _scripts
from gateway.store._redis_parts import _raise_if_cancelling

logger = logging.getLogger(__name__)

Commands = Callable[..., Awaitable[list[Any]]]
"""``RedisStore._commands``: runs commands (each a tuple of its parts) in one round trip."""


class TokenBuckets:
    """Token buckets by key, in this process: ``rate`` tokens a second, ``burst`` saved up."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, when counted)

    def acquire(self, key: str, rate: float, burst: int) -> float:
        """Take a token: 0.0 if granted, else the seconds until one is available."""
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - stamp) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._prune(now, burst / rate)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / rate

    def _prune(self, now: float, refill: float) -> None:
        if len(self._buckets) <= self._max_keys:
            return
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}
        if len(self._buckets) > self._max_keys:  # all busy: forget the least recent half
            ordered = sorted(self._buckets.items(), key=lambda item: item[1][1])
            self._buckets = dict(ordered[len(ordered) // 2 :])


class Limits(abc.ABC):
    """The rate limit's side of a store (see the module's docstring)."""

    @abc.abstractmethod
    async def take(self, key: str, rate: float, burst: int) -> float:
        """Take a token from ``key``'s bucket (``rate`` a second, at most ``burst`` saved up):
        0.0 if granted, else the seconds until one is available."""


class MemoryLimits(Limits):
    """:class:`TokenBuckets` of this process."""

    def __init__(self) -> None:
        self._buckets = TokenBuckets()

    async def take(self, key: str, rate: float, burst: int) -> float:
        return self._buckets.acquire(key, rate, burst)


class RedisLimits(Limits):
    """Buckets in Redis under ``<prefix>:rate:{<sha256 of the key>}`` (one key, one slot),
    through ``commands`` (the store's round trips). With ``cluster`` (a Redis Cluster) a script
    call reaches the keys of one slot only (see :meth:`admit`)."""

    def __init__(self, commands: Commands, prefix: str, *, cluster: bool) -> None:
        self._commands = commands
        self._prefix = prefix
        self._cluster = cluster
        self._fallback = TokenBuckets()
        self._degraded = False

    def _key(self, key: str) -> str:
        return f"{self._prefix}:rate:{{{hashlib.sha256(key.encode()).hexdigest()[:32]}}}"

    async def take(self, key: str, rate: float, burst: int) -> float:
        command = ("EVAL", _scripts.TAKE_TOKEN, 1, self._key(key), repr(rate), burst)
        try:
            wait_ms = (await self._commands([command], repeatable=False))[0]
        except (RedisError, OSError) as exc:
            _raise_if_cancelling()
            if not self._degraded:
                logger.warning("rate limit: Redis unreachable (%r), counting in this process", exc)
                self._degraded = True
            return self._fallback.acquire(key, rate, burst)
        if self._degraded:
            logger.warning("rate limit: Redis answers again, counting deployment-wide")
            self._degraded = False
        return int(wait_ms) / 1000.0

    async def admit(self, bound_key: str, bound: int, commands: Sequence[tuple[Any, ...]]) -> bool:
        """Run ``commands`` (each ``(name, key, *args)``) only while the sorted set
        ``bound_key`` holds fewer than ``bound`` members; whether they ran.

        One atomic script call on one Redis. On a Cluster the script takes only the commands on
        ``bound_key`` (its slot), the check and the reservation in one; the others follow in a
        second round trip (should that one fail, the reservation is a member without a task,
        which listings drop).
        """
        inside = [c for c in commands if not self._cluster or c[1] == bound_key]
        outside = [c for c in commands if self._cluster and c[1] != bound_key]
        keys = [bound_key, *(c[1] for c in inside)]
        args: list[Any] = [bound]
        for name, _key, *rest in inside:
            args += [len(rest), name, *rest]
        script = ("EVAL", _scripts.IF_BELOW, len(keys), *keys, *args)
        if not (await self._commands([script], repeatable=False, now=True))[0]:
            return False
        if outside:
            await self._commands(outside, repeatable=False, now=True)
        return True


__all__ = ["Limits", "MemoryLimits", "RedisLimits", "TokenBuckets"]
