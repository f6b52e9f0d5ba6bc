"""The durable outbox: deliveries made when a task ends (its webhook, A2A push notifications).

A delivery is named (``webhook``, ``a2a-push:<config id>``) and belongs to a task. It is written
to the store before the task ends — the webhook and the push configs a task is sent with
(``create``'s ``extras``) with the task itself, in the same round trip as its record; a push
config added later when it is made — so there is no moment at which a task is terminal and its
deliveries are not in the store: the terminal status, written atomically with the finish
message, is what makes them due. Any replica delivers them (``gateway.outbox``):

- ``due(now)``: the tasks with deliveries to look at (an index ordered by the next time to look);
- ``claim``: a lease on one task's deliveries (so two replicas do not send at once) and their
  records, once the task is terminal;
- ``settle``: the records after an attempt (attempt count, next attempt time), the task's next
  time to look (or none: all final) and the lease released.

The records are JSON objects the delivering side owns; the store keeps them with the task
(they expire with it).

``RedisStore``: ``<prefix>:outbox`` (a sorted set: task id → when to look next, epoch ms) and
``<prefix>:{<id>}:outbox`` (a hash beside the task: ``d:<name>`` → record, ``lease``). The index
entry of a running task is looked at every ``recheck_ms`` (a replica that ends a task makes it
due at once, so this only matters when that replica dies in between); index and hash are
written in separate commands, so Redis Cluster works, and each step heals a crash of the last.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from gateway.protocol import TaskRecord, now_ms

WEBHOOK = "webhook"
"""The delivery name of a task's ``callbackUrl`` webhook."""


class Claim(enum.Enum):
    OK = "ok"
    RUNNING = "running"  # not ended yet: look again later
    GONE = "gone"  # the task expired: forget it
    LEASED = "leased"  # another replica is delivering it


@dataclasses.dataclass(frozen=True, slots=True)
class Claimed:
    state: Claim
    records: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def _pending() -> dict[str, Any]:
    return {"status": "pending", "attempts": []}


def _webhook(record: TaskRecord) -> list[str]:
    """The delivery a task's request names itself: its ``callbackUrl`` webhook."""
    return [WEBHOOK] if record.request.get("callbackUrl") else []


class Outbox(abc.ABC):
    """The deliveries of tasks, kept by the store (see the module's docstring)."""

    recheck_ms = 10_000
    """Milliseconds before a task claimed before its end is looked at again."""

    @abc.abstractmethod
    async def enroll(self, task_id: str, name: str) -> bool:
        """Add the delivery ``name`` to ``task_id`` (made once it ends; at once if it has
        ended); a known name is left as it is. False when there is no such task."""

    @abc.abstractmethod
    async def due(self, now: int, limit: int) -> list[str]:
        """Up to ``limit`` ids of tasks with deliveries to look at by ``now``."""

    @abc.abstractmethod
    async def claim(self, task_id: str, owner: str, lease_ms: int) -> Claimed:
        """Lease the deliveries of an ended task to ``owner`` and return their records."""

    @abc.abstractmethod
    async def later(self, task_id: str, at: int) -> None:
        """The task has not ended: look at it again at ``at``."""

    @abc.abstractmethod
    async def forget(self, task_id: str) -> None:
        """The task expired: drop it from the index."""

    @abc.abstractmethod
    async def settle(
        self, task_id: str, owner: str, records: dict[str, dict[str, Any]], next_at: int | None
    ) -> bool:
        """Write ``records`` (by name), look again at ``next_at`` (``None``: all are final) and
        release ``owner``'s lease; False (nothing written) if the lease was lost."""

    @abc.abstractmethod
    async def records(self, task_id: str) -> dict[str, dict[str, Any]]:
        """The delivery records of ``task_id`` by name (empty when it has none)."""


# -- MemoryStore -------------------------------------------------------------------------------
class MemoryOutbox(Outbox):
    """In the process: records and due times in dicts; the task's end makes it due in the same
    step (:meth:`ended`, called by ``MemoryStore.finish``)."""

    def __init__(self, get: Callable[[str], Awaitable[TaskRecord | None]]) -> None:
        self._get = get  # the store's ``get``
        self._records: dict[str, dict[str, dict[str, Any]]] = {}
        self._due: dict[str, float] = {}  # task id → when to look (inf: when it ends)
        self._leases: dict[str, tuple[str, float]] = {}

    def created(self, record: TaskRecord, deliveries: Sequence[str] = ()) -> None:
        """``record`` was created: its webhook and ``deliveries`` are enrolled with it."""
        names = [*_webhook(record), *deliveries]
        if names:
            self._records[record.task_id] = {name: _pending() for name in names}
            self._due[record.task_id] = float("inf")

    def ended(self, task_id: str) -> None:
        if task_id in self._due:
            self._due[task_id] = min(self._due[task_id], now_ms())

    def sweep(self, live: Callable[[str], bool]) -> None:
        """Forget the deliveries of tasks that expired."""
        for task_id in [t for t in self._records if not live(t)]:
            self._records.pop(task_id, None)
            self._due.pop(task_id, None)
            self._leases.pop(task_id, None)

    async def enroll(self, task_id: str, name: str) -> bool:
        record = await self._get(task_id)
        if record is None:
            return False
        self._records.setdefault(task_id, {}).setdefault(name, _pending())
        self._due.setdefault(task_id, float("inf"))
        if record.terminal:
            self.ended(task_id)
        return True

    async def due(self, now: int, limit: int) -> list[str]:
        ready = sorted((at, t) for t, at in self._due.items() if at <= now)
        return [t for _, t in ready[:limit]]

    async def claim(self, task_id: str, owner: str, lease_ms: int) -> Claimed:
        record = await self._get(task_id)
        if record is None:
            return Claimed(Claim.GONE)
        if not record.terminal:
            return Claimed(Claim.RUNNING)
        holder, until = self._leases.get(task_id, ("", 0.0))
        if holder != owner and until > time.monotonic():
            return Claimed(Claim.LEASED)
        self._leases[task_id] = (owner, time.monotonic() + lease_ms / 1000)
        return Claimed(Claim.OK, orjson.loads(orjson.dumps(self._records.get(task_id, {}))))

    async def later(self, task_id: str, at: int) -> None:
        if task_id in self._due:
            self._due[task_id] = at

    async def forget(self, task_id: str) -> None:
        self._due.pop(task_id, None)

    async def settle(
        self, task_id: str, owner: str, records: dict[str, dict[str, Any]], next_at: int | None
    ) -> bool:
        if self._leases.get(task_id, ("", 0.0))[0] != owner:
            return False
        del self._leases[task_id]
        self._records.setdefault(task_id, {}).update(records)
        if next_at is None:
            self._due.pop(task_id, None)
        else:
            self._due[task_id] = next_at
        return True

    async def records(self, task_id: str) -> dict[str, dict[str, Any]]:
        return orjson.loads(orjson.dumps(self._records.get(task_id, {})))  # type: ignore[no-any-return]


# -- RedisStore --------------------------------------------------------------------------------
# KEYS: outbox hash, task state. ARGV: field, pending record, ttl seconds. Adds the delivery
#   (HSETNX); returns nil without a task, else 1 when it has ended, 0 when not.
_ENROLL = """
local st = redis.call('HGET', KEYS[2], 'status')
if not st then return nil end
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
if st == 'COMPLETED' or st == 'FAILED' or st == 'CANCELLED' then return 1 end
return 0
"""

# KEYS: outbox hash, task state. ARGV: owner, now ms, lease ms. Returns {'gone'}, {'running'},
#   {'leased'} or {'ok', <the hash, flat>} with the lease taken by owner.
_CLAIM = """
local st = redis.call('HGET', KEYS[2], 'status')
if not st then return {'gone'} end
if st ~= 'COMPLETED' and st ~= 'FAILED' and st ~= 'CANCELLED' then return {'running'} end
local lease = redis.call('HGET', KEYS[1], 'lease')
if lease then
  local sp = string.find(lease, ' ', 1, true)
  local holder, untl = string.sub(lease, 1, sp - 1), tonumber(string.sub(lease, sp + 1))
  if holder ~= ARGV[1] and untl > tonumber(ARGV[2]) then return {'leased'} end
end
redis.call('HSET', KEYS[1], 'lease', ARGV[1] .. ' ' .. (tonumber(ARGV[2]) + tonumber(ARGV[3])))
return {'ok', redis.call('HGETALL', KEYS[1])}
"""

# KEYS: outbox hash. ARGV: owner, ttl seconds, then field, record pairs. Writes them and
#   releases the lease if owner holds it (1), else writes nothing (0).
_SETTLE = """
local lease = redis.call('HGET', KEYS[1], 'lease')
if not lease or string.sub(lease, 1, string.len(ARGV[1]) + 1) ~= ARGV[1] .. ' ' then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HDEL', KEYS[1], 'lease')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

Commands = Callable[..., Awaitable[list[Any]]]


class RedisOutbox(Outbox):
    """The outbox in Redis (see the module's docstring), over ``RedisStore``'s round trips."""

    def __init__(self, commands: Commands, prefix: str, result_ttl: int) -> None:
        self._commands = commands
        self._prefix = prefix
        self.index = f"{prefix}:outbox"
        self.result_ttl = result_ttl

    def _hash(self, task_id: str) -> str:
        return f"{self._prefix}:{{{task_id}}}:outbox"

    def _keys(self, task_id: str) -> tuple[str, str]:
        return self._hash(task_id), f"{self._prefix}:{{{task_id}}}:state"

    def create_commands(
        self, record: TaskRecord, deliveries: Sequence[str] = ()
    ) -> list[tuple[Any, ...]]:
        """What creating ``record`` writes for its webhook and ``deliveries``: sent before the
        task's record, so a partial write leaves an index entry without a task (dropped),
        never a task without."""
        names = [*_webhook(record), *deliveries]
        if not names:
            return []
        task_id, key, pending = record.task_id, self._hash(record.task_id), orjson.dumps(_pending())
        return [
            ("ZADD", self.index, "LT", now_ms() + self.recheck_ms, task_id),
            ("HSET", key, *(part for name in names for part in ("d:" + name, pending))),
            ("EXPIRE", key, self.result_ttl * 2),
        ]

    def ended_command(self, task_id: str, at: int) -> tuple[Any, ...]:
        """Sent after a task's end by the replica that ended it: its deliveries are due now."""
        return ("ZADD", self.index, "XX", "LT", at, task_id)

    async def enroll(self, task_id: str, name: str) -> bool:
        pending = orjson.dumps(_pending())
        command = ("EVAL", _ENROLL, 2, *self._keys(task_id), "d:" + name, pending)
        ended = (await self._commands([(*command, self.result_ttl * 2)]))[0]
        if ended is None:
            return False
        at = now_ms() + (0 if ended else self.recheck_ms)
        await self._commands([("ZADD", self.index, "LT", at, task_id)])
        return True

    async def due(self, now: int, limit: int) -> list[str]:
        command = ("ZRANGEBYSCORE", self.index, "-inf", now, "LIMIT", 0, limit)
        return [m.decode() for m in (await self._commands([command]))[0]]

    async def claim(self, task_id: str, owner: str, lease_ms: int) -> Claimed:
        command = ("EVAL", _CLAIM, 2, *self._keys(task_id), owner, now_ms(), lease_ms)
        reply = (await self._commands([command], repeatable=False))[0]
        state = Claim(reply[0].decode())
        return Claimed(state, _records(reply[1]) if state is Claim.OK else {})

    async def later(self, task_id: str, at: int) -> None:
        await self._commands([("ZADD", self.index, "XX", at, task_id)])

    async def forget(self, task_id: str) -> None:
        await self._commands([("ZREM", self.index, task_id)])

    async def settle(
        self, task_id: str, owner: str, records: dict[str, dict[str, Any]], next_at: int | None
    ) -> bool:
        pairs = [part for n, r in records.items() for part in ("d:" + n, orjson.dumps(r))]
        command = ("EVAL", _SETTLE, 1, self._hash(task_id), owner, self.result_ttl, *pairs)
        if not (await self._commands([command], repeatable=False))[0]:
            return False
        index = ("ZREM", self.index, task_id) if next_at is None else ("ZADD", self.index, "XX")
        await self._commands([index if next_at is None else (*index, next_at, task_id)])
        return True

    async def records(self, task_id: str) -> dict[str, dict[str, Any]]:
        return _records((await self._commands([("HGETALL", self._hash(task_id))]))[0])


def _records(flat: Sequence[bytes] | dict[bytes, bytes]) -> dict[str, dict[str, Any]]:
    pairs = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
    return {k.decode()[2:]: orjson.loads(v) for k, v in pairs if k.startswith(b"d:")}
