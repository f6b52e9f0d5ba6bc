"""Durable task state and logs: ``StreamStore`` and its two implementations."""

from gateway.store._outbox import WEBHOOK, Claim
from gateway.store._replay import replay
from gateway.store.base import (
    IdempotencyKeyReused,
    IllegalTransition,
    LeaseState,
    QueueLimitReached,
    StoreError,
    StoreUnavailable,
    StreamStore,
    TaskEnded,
    TaskExtras,
    TaskNotFound,
)
from gateway.store.memory import MemoryStore
from gateway.store.redis import UNREACHABLE, RedisStore

__all__ = [
    "UNREACHABLE",
    "WEBHOOK",
    "Claim",
    "IdempotencyKeyReused",
    "IllegalTransition",
    "LeaseState",
    "MemoryStore",
    "QueueLimitReached",
    "RedisStore",
    "StoreError",
    "StoreUnavailable",
    "StreamStore",
    "TaskEnded",
    "TaskExtras",
    "TaskNotFound",
    "replay",
]
