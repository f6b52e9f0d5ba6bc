"""Pieces of ``RedisStore``: key names, record decoding, and the shared per-task follower."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from redis.exceptions import RedisError

from gateway.protocol import StoredMessage, TaskError, TaskRecord, TaskStatus
from gateway.store._log import LocalLog

logger = logging.getLogger(__name__)

GROUP = "agw-workers"
SOCKET_TIMEOUT = 10.0
#: Longest a blocking read waits in one call; below ``SOCKET_TIMEOUT`` so it never trips it.
MAX_BLOCK = 4.0


class _Keys:
    """Key names under one prefix (``agw`` by default); the task id is the hash tag."""

    __slots__ = ("all", "prefix", "queue")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.queue = f"{prefix}:queue"
        self.all = f"{prefix}:idx:all"

    def state(self, task_id: str) -> str:
        return f"{self.prefix}:{{{task_id}}}:state"

    def log(self, task_id: str) -> str:
        return f"{self.prefix}:{{{task_id}}}:log"

    def index(self, status: TaskStatus | str) -> str:
        return f"{self.prefix}:idx:{status}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{{{key}}}"

    def note(self, task_id: str, kind: str) -> str:
        return f"{self.prefix}:{{{task_id}}}:note:{kind}"

    def task(self, task_id: str) -> list[str]:
        return [self.state(task_id), self.log(task_id)]


def _opt_int(value: bytes | None) -> int | None:
    return int(value) if value else None


def _hash(reply: Any) -> dict[bytes, bytes]:
    """An ``HGETALL`` reply as a dict (redis-py's is one; a raw reply is a flat list)."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _scored(reply: list[Any]) -> list[tuple[float, str]]:
    """A ``Z…RANGE… WITHSCORES`` reply as (score, member) pairs, whether flat (the lane's and
    RESP2's) or already paired."""
    if reply and isinstance(reply[0], bytes):
        return [(float(s), m.decode()) for m, s in zip(reply[::2], reply[1::2], strict=True)]
    return [(float(s), m.decode()) for m, s in reply]


def _record(fields: dict[bytes, bytes]) -> TaskRecord:
    error = fields.get(b"error")
    err = orjson.loads(error) if error else None
    result = fields.get(b"result")
    return TaskRecord(
        task_id=fields[b"taskId"].decode(),
        request_id=fields[b"requestId"].decode(),
        agent_type=int(fields[b"agentType"]),
        query=fields[b"query"].decode(),
        status=TaskStatus(fields[b"status"].decode()),
        created_at=int(fields[b"createdAt"]),
        started_at=_opt_int(fields.get(b"startedAt")),
        ended_at=_opt_int(fields.get(b"endedAt")),
        error=TaskError(err["code"], err["message"]) if err else None,
        last_seq=int(fields.get(b"lastSeq", b"0")),
        result=result.decode() if result is not None else None,
        request=orjson.loads(fields.get(b"request", b"{}")),
        tenant=fields[b"tenant"].decode() if b"tenant" in fields else None,
        owner=fields[b"owner"].decode() if fields.get(b"owner") else None,
        lease_until=_opt_int(fields.get(b"leaseUntil")),
        attempts=int(fields.get(b"attempts", b"0")),
    )


def _raise_if_cancelling() -> None:
    """redis-py may turn a cancellation into a connection error: never let that hide it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _messages(entries: list[Any]) -> list[StoredMessage]:
    """``XRANGE`` entries as messages (redis-py gives each entry's fields as a dict, the lane
    as a flat list: ``d``, the data, then ``f`` on a finish)."""
    out = []
    for entry_id, fields in entries:
        seq = int(entry_id.split(b"-", 1)[0])
        if isinstance(fields, dict):
            out.append(StoredMessage(seq, fields[b"d"], b"f" in fields))
        else:
            out.append(StoredMessage(seq, fields[1], b"f" in fields[2::2]))
    return out


class _Follower:
    """A shared tail of one task's Redis Stream (messages after ``base``)."""

    __slots__ = ("done", "log", "readers", "task")

    def __init__(self, base: int) -> None:
        self.log = LocalLog(base)
        self.readers = 0
        self.done = False
        self.task: asyncio.Task[None] | None = None

    async def run(self, client: Any, key: str, forget: Callable[[_Follower], None]) -> None:
        """One blocking XREAD loop per task and process, shared by all its local readers;
        it ends at the task's finish, or once no reader waited for two rounds."""
        log = self.log
        try:
            idle_rounds = 0
            while not log.finished and idle_rounds < 2:
                try:
                    reply = await client.xread(
                        {key: f"{log.last_seq}-0"}, count=1000, block=int(MAX_BLOCK * 1000)
                    )
                except (RedisError, OSError) as exc:
                    _raise_if_cancelling()
                    logger.warning("following %s failed: %s", key, exc)
                    await asyncio.sleep(0.5)
                    continue
                for message in _messages(reply[0][1]) if reply else []:
                    if message.seq == log.last_seq + 1:
                        log.add(message)
                idle_rounds = idle_rounds + 1 if self.readers == 0 else 0
        finally:
            self.done = True
            log.wake()
            forget(self)
