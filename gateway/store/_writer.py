"""Coalesced log writes for ``RedisStore``.

Appends land in a per-task ``_Writer`` in memory at once (their seq is assigned there); a single
flusher sends every dirty task's pending messages to Redis on the next turn of the loop (under
load at most once per ``spacing``) in one Lua call for all of them, on a connection of its own
(``_lane``; one call per task through redis-py on Redis Cluster). A failed flush keeps its
messages and is retried; a retry of a flush that did reach Redis is recognised by its sequence
numbers, so nothing is lost or written twice.

Durable before visible (DESIGN §3): a message reaches the writer's ``log`` — the one every local
reader reads, parks on or is pushed from — only once Redis has acknowledged its write. The log's
``last_seq`` is the task's durable high-water mark, advanced (and its readers woken) once per
flush, after the reply. So no reader is ever given a message a crash of this process could take
back, and a seq a reader has seen is never written again by another process (the sweeper's and
a retry's messages take the seq after what Redis holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import NoScriptError

from gateway.protocol import StoredMessage
from gateway.store._lane import Lane, pack
from gateway.store._log import LocalLog

logger = logging.getLogger(__name__)


#: What a flush sends for one task: task id, writer, its messages, the first one's seq, and the
#: final fields (status, endedAt, error json, result, ttl, final data) if the flush ends it.
_Entry = tuple[str, "_Writer", list[StoredMessage], int, "list[bytes] | None"]


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _bulk_int(value: int) -> bytes:
    text = b"%d" % value
    return b"$%d\r\n%s\r\n" % (len(text), text)


_SMALL = [_bulk_int(n) for n in range(256)]
_NO_FINAL = _bulk(b"")  # a task's final status when the flush does not end it (nothing follows)


class _Writer:
    """This process's write side of one task's log: ``pending`` messages wait for their
    flush, ``log`` holds the durable ones (``flushed_seq`` = ``log.last_seq``, the mark)."""

    __slots__ = (
        "closing",
        "ended_as",
        "final",
        "flushed_seq",
        "log",
        "lost",
        "moved",
        "owner",
        "pending",
        "resp",
        "score",
        "waiters",
    )

    def __init__(self, base: int, owner: str, score: float) -> None:
        self.log = LocalLog(base)
        self.owner = owner
        self.score = score
        self.flushed_seq = base
        self.pending: list[StoredMessage] = []
        # the finish's script arguments: status, endedAt, error json, result, ttl, message data
        self.final: list[bytes] | None = None
        self.ended_as: bytes | None = None  # the final status, once Redis holds it
        self.lost: str | None = None
        self.closing: StoredMessage | None = None
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.moved: asyncio.Future[None] | None = None  # the claim's index move, in flight
        self.resp: tuple[bytes, bytes] | None = None  # keys and owner as RESP, once flushed

    @property
    def last_seq(self) -> int:
        """The seq of the last message appended (durable or not)."""
        return self.flushed_seq + len(self.pending)

    def made_durable(self, messages: list[StoredMessage]) -> None:
        """Hand ``messages``, just acknowledged by Redis, to the log's readers (unless a third
        party's write already ended or moved past this log: its readers then go to Redis)."""
        log = self.log
        if messages and not log.finished and messages[0].seq == log.last_seq + 1:
            log.extend(messages)

    async def index_moved(self) -> None:
        """Wait for the claim's move between the listing indexes (a later move must follow it)."""
        if self.moved is not None:
            with contextlib.suppress(Exception):
                await self.moved

    def settle(self, upto: int, error: Exception | None = None) -> None:
        """Resolve the waiters whose seq is durable (or fail them all with ``error``)."""
        if not self.waiters:
            return
        keep = []
        for seq, fut in self.waiters:
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            elif seq <= upto:
                fut.set_result(None)
            else:
                keep.append((seq, fut))
        self.waiters = keep


class Flusher:
    """Owns the flush loop; ``RedisStore`` feeds it dirty writers."""

    def __init__(
        self,
        client: Any,
        append_script: Any,
        keys: Callable[[str], list[str]],
        on_flushed: Callable[[float], None],
        on_sealed: Callable[[str, _Writer], None],
        on_finished: Callable[[str, _Writer], Any],
        interval: float,
        one_call: bool = True,
        lane: Lane | None = None,
        spacing: float = 0.0,
    ) -> None:
        self._client = client
        self._script = append_script
        self._lane = lane
        self._keys = keys
        self._on_flushed = on_flushed
        self._on_sealed = on_sealed
        self._on_finished = on_finished
        self._interval = interval
        self._spacing = spacing
        self._one_call = one_call
        self._dirty: dict[str, _Writer] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def _send(self, entries: list[_Entry]) -> list[Any]:
        """One script call for every task of the flush; Redis Cluster refuses a script whose
        keys span hash slots, so there each task's call goes out concurrently instead.
        One reply per task: its last seq, or the error text of its refused writes."""
        if self._lane is not None:
            return list(await self._evalsha(entries))
        requests = [
            (
                [key.encode() for key in self._keys(task_id)],
                [writer.owner.encode(), b"%d" % first, b"%d" % len(messages)]
                + [m.data for m in messages]
                + (final or [b""]),
            )
            for task_id, writer, messages, first, final in entries
        ]
        if self._one_call:
            keys = [key for task_keys, _ in requests for key in task_keys]
            args = [arg for _, task_args in requests for arg in task_args]
            return list(await self._script(keys=keys, args=args))
        replies = await asyncio.gather(*(self._script(keys=k, args=a) for k, a in requests))
        return [reply[0] for reply in replies]

    async def _evalsha(self, entries: list[_Entry]) -> Any:
        """The script call on the lane, its RESP bytes put together here: a task's keys and
        owner are encoded once per task, a message once (a general packer would format every
        one of a flush's hundreds of arguments on its own). The script is loaded if Redis does
        not know it."""
        assert self._lane is not None
        keys: list[bytes] = []
        args: list[bytes] = []
        count = 0
        for task_id, writer, messages, first, final in entries:
            if writer.resp is None:
                writer.resp = (
                    b"".join([_bulk(key.encode()) for key in self._keys(task_id)]),
                    _bulk(writer.owner.encode()),
                )
            keys.append(writer.resp[0])
            n = len(messages)
            args += (writer.resp[1], _bulk_int(first), _SMALL[n] if n < 256 else _bulk_int(n))
            args += [_bulk(m.data) for m in messages]
            if final is None:
                args.append(_NO_FINAL)
                count += 4 + n
            else:
                args += [_bulk(arg) for arg in final]
                count += 9 + n
        n_keys = 2 * len(entries)
        head = b"*%d\r\n$7\r\nEVALSHA\r\n%s%s" % (
            3 + n_keys + count,
            _bulk(self._script.sha.encode()),
            _bulk_int(n_keys),
        )
        command = b"".join([head, *keys, *args])
        try:
            return await self._lane.call(command, now=True)  # readers wait for its reply
        except NoScriptError:
            source = self._script.script
            await self._lane.call(
                pack([b"SCRIPT", b"LOAD", source if isinstance(source, bytes) else source.encode()])
            )
            return await self._lane.call(command, now=True)

    def mark(self, task_id: str, writer: _Writer) -> None:
        dirty = self._dirty
        if not dirty:  # else the flush loop is awake or will look at ``_dirty`` before waiting
            self._wakeup.set()
        dirty[task_id] = writer

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis-store-flusher")

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is pending (bounded by ``timeout``), then stop the loop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._lane is not None:
            self._lane.close()

    async def _run(self) -> None:
        backoff = 0.05
        loop = asyncio.get_running_loop()
        last = -math.inf  # when the last flush started
        while True:
            if not self._dirty:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                if not self._closing and self._interval > 0:
                    # More appends join this flush. Without an interval none is needed: this
                    # task wakes on the loop's next turn, after every append of this one, and
                    # readers wait for the flush (appends made while it is in flight join the
                    # next one).
                    await asyncio.sleep(self._interval)
            # Under load, at most one flush per ``spacing``: fewer, larger flushes. After a
            # quiet spell the first append is flushed at once.
            gap = last + self._spacing - loop.time()
            if gap > 0 and not self._closing:
                await asyncio.sleep(gap)
            last = loop.time()
            batch, self._dirty = self._dirty, {}
            try:
                await self._flush(batch)
                backoff = 0.05
            except Exception as exc:  # the flusher must outlive any failure: retry, never drop
                logger.warning("store flush failed, retrying: %r", exc)
                for task_id, writer in batch.items():
                    self._dirty.setdefault(task_id, writer)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _flush(self, batch: dict[str, _Writer]) -> None:
        started = time.perf_counter()
        entries: list[_Entry] = []
        for task_id, writer in batch.items():
            if writer.lost or (not writer.pending and writer.final is None):
                continue
            entries.append(
                (task_id, writer, list(writer.pending), writer.flushed_seq + 1, writer.final)
            )
        if not entries:
            return
        replies = await self._send(entries)
        self._on_flushed(time.perf_counter() - started)
        # Settle every writer of the batch before awaiting anything, so no reader ever sees a
        # task that Redis already calls finished without its finish message in memory.
        ended: list[tuple[str, _Writer]] = []
        for (task_id, writer, messages, first, final), reply in zip(entries, replies, strict=True):
            n_sent = len(messages)
            last = first + n_sent - (final is None)
            if isinstance(reply, bytes):  # the script refused this task's writes
                text = reply.decode()
                durable = int(text[4:]) if text.startswith("SEQ ") else -1
                if writer.flushed_seq < durable < last:
                    # An earlier flush whose reply was lost (Redis went away after writing)
                    # got the first messages through: keep the rest for the next flush.
                    landed = durable - writer.flushed_seq
                    writer.made_durable(writer.pending[:landed])
                    del writer.pending[:landed]
                    writer.flushed_seq = durable
                    writer.settle(durable)
                    self.mark(task_id, writer)
                    continue
                if durable < last:  # refused: the task ended elsewhere, or the lease is lost
                    # Its pending messages were never visible: dropping them takes nothing
                    # back from any reader.
                    writer.lost = text.split(" ", 1)[0] or "LOST"
                    writer.pending = []
                    writer.settle(0, LostWriter(writer.lost))
                    ended.append((task_id, writer))
                    continue
                # else: a retry of a flush that did reach Redis; all of it is durable
            # Visible from here: pushed to parked readers, waiting ones woken once.
            writer.made_durable(messages)
            del writer.pending[:n_sent]
            writer.flushed_seq = last
            if final is not None:
                writer.ended_as, writer.final = final[0], None
                ended.append((task_id, writer))
            writer.settle(last)
        for task_id, writer in ended:
            self._on_sealed(task_id, writer)
        if ended:  # their index moves, together (one round trip on the lane)
            await asyncio.gather(*(self._on_finished(t, w) for t, w in ended))


class LostWriter(Exception):
    """Redis refused this process's writes for a task (ended elsewhere or lease lost)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
