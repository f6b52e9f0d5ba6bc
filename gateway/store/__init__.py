"""Durable task state and logs: ``StreamStore`` and its two implementations."""

from gateway.store.base import (
    IllegalTransition,
    LeaseState,
    StoreError,
    StoreUnavailable,
    StreamStore,
    TaskEnded,
    TaskNotFound,
)
from gateway.store.memory import MemoryStore
from gateway.store.redis import UNREACHABLE, RedisStore

__all__ = [
    "UNREACHABLE",
    "IllegalTransition",
    "LeaseState",
    "MemoryStore",
    "RedisStore",
    "StoreError",
    "StoreUnavailable",
    "StreamStore",
    "TaskEnded",
    "TaskNotFound",
]
