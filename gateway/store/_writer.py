"""Coalesced log writes for ``RedisStore``.

Appends land in a per-task ``_Writer`` in memory at once (their seq is assigned there); a single
flusher sends every dirty task's pending messages to Redis at the end of the turn of the loop
(under load at most once per ``spacing``) in one Lua call for all of them, on a connection of
its own (``_lane``; one call per task through redis-py on Redis Cluster), with up to two flushes
in flight there. A failed flush keeps its messages and is retried; a retry of a flush that did
reach Redis is recognised by its sequence numbers, so nothing is lost or written twice.

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
from gateway.store._pending import LostWriter, _Writer

logger = logging.getLogger(__name__)


#: What a flush sends for one task: task id, writer, its messages, the first one's seq, the
#: final fields (status, endedAt, error json, result, ttl, final data) if the flush ends it, and
#: the writer's ``epoch`` when it was sent.
_Entry = tuple[str, "_Writer", list[StoredMessage], int, "list[bytes] | None", int]


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _bulk_int(value: int) -> bytes:
    text = b"%d" % value
    return b"$%d\r\n%s\r\n" % (len(text), text)


_SMALL = [_bulk_int(n) for n in range(256)]
_NO_FINAL = _bulk(b"")  # a task's final status when the flush does not end it (nothing follows)


class Flusher:
    """Sends the dirty writers' messages to Redis; ``RedisStore`` feeds it with ``mark``.

    On the lane, a flush's reply is handled by a callback in the turn that reads it (readers
    are pushed there, and the next flush goes out), and up to ``DEPTH`` flushes are in flight:
    replies come in order on one connection, so a flush sent while the previous one awaits its
    reply is settled after it. A token then waits for about one round trip, not for the rest of
    the flush in flight as well. Elsewhere (redis-py, Redis Cluster; connecting; loading the
    script) one flush at a time runs as a task.
    """

    #: Flushes in flight at once on the lane.
    DEPTH = 2

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
        self._loop: asyncio.AbstractEventLoop | None = None  # set by ``start``
        self._in_flight = 0  # flushes sent, not yet settled (DEPTH while a task flushes)
        self._next: asyncio.Handle | None = None  # the scheduled ``_kick``
        self._last = -math.inf  # when the last flush started
        self._resume_at = -math.inf  # no flush before (after a failure)
        self._backoff = 0.05
        self._load_script = False  # Redis forgot the script: the next flush loads it
        self._tasks: set[asyncio.Task[Any]] = set()  # task flushes and index moves
        self._closing = False
        self._drained: asyncio.Future[None] | None = None
        self._sha: tuple[str, bytes] = ("", b"")  # the script's digest, and its bulk string

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
            for task_id, writer, messages, first, final, _ in entries
        ]
        if self._one_call:
            keys = [key for task_keys, _ in requests for key in task_keys]
            args = [arg for _, task_args in requests for arg in task_args]
            return list(await self._script(keys=keys, args=args))
        replies = await asyncio.gather(*(self._script(keys=k, args=a) for k, a in requests))
        return [reply[0] for reply in replies]

    def _command(self, entries: list[_Entry]) -> bytes:
        """The script call's RESP bytes, put together here: a task's keys and owner are
        encoded once per task, a message once (a general packer would format every one of a
        flush's hundreds of arguments on its own)."""
        keys: list[bytes] = []
        args: list[bytes] = []
        count = 0
        for task_id, writer, messages, first, final, _ in entries:
            if writer.resp is None:
                writer.resp = (
                    b"".join([_bulk(key.encode()) for key in self._keys(task_id)]),
                    _bulk(writer.owner.encode()),
                )
            keys.append(writer.resp[0])
            n, seq = len(messages), _SMALL[first] if first < 256 else _bulk_int(first)
            args += (writer.resp[1], seq, _SMALL[n] if n < 256 else _bulk_int(n))
            args += [b"$%d\r\n%s\r\n" % (len(m.data), m.data) for m in messages]  # _bulk
            if final is None:
                args.append(_NO_FINAL)
                count += 4 + n
            else:
                args += [b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in final]
                count += 9 + n
        n_keys = 2 * len(entries)
        sha = self._script.sha
        if self._sha[0] != sha:  # the script's digest as a bulk string, made once
            self._sha = (sha, _bulk(sha.encode()))
        head = b"*%d\r\n$7\r\nEVALSHA\r\n%s%s" % (
            3 + n_keys + count,
            self._sha[1],
            _SMALL[n_keys] if n_keys < 256 else _bulk_int(n_keys),
        )
        return b"".join([head, *keys, *args])

    async def _evalsha(self, entries: list[_Entry]) -> Any:
        """The script call on the lane, awaited; the script is loaded if Redis does not know it."""
        assert self._lane is not None
        command = self._command(entries)
        try:
            return await self._lane.call(command, now=True)  # readers wait for its reply
        except NoScriptError:
            source = self._script.script
            await self._lane.call(
                pack([b"SCRIPT", b"LOAD", source if isinstance(source, bytes) else source.encode()])
            )
            return await self._lane.call(command, now=True)

    def mark(self, task_id: str, writer: _Writer) -> None:
        """``writer`` has something to flush: it goes out at the end of this turn of the loop
        (after ``interval`` from a quiet start), or when a flush in flight is answered."""
        self._dirty[task_id] = writer
        if self._next is None and self._in_flight < self.DEPTH and self._loop is not None:
            quiet = self._in_flight == 0 and self._interval > 0 and not self._closing
            self._schedule(self._interval if quiet else 0.0)

    def _schedule(self, delay: float) -> None:
        assert self._loop is not None
        if self._next is not None:
            self._next.cancel()
        if delay > 0:
            self._next = self._loop.call_later(delay, self._kick)
        else:
            self._next = self._loop.call_soon(self._kick)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._dirty:
            self._schedule(0.0)

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is pending (bounded by ``timeout``), then stop."""
        self._closing = True
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._drained = loop.create_future()
        self._check_drained()
        if not self._drained.done() and self._in_flight < self.DEPTH:
            self._schedule(0.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._drained
                while self._tasks:
                    await asyncio.wait(list(self._tasks))
        if self._next is not None:
            self._next.cancel()
            self._next = None
        for task in list(self._tasks):
            task.cancel()
        if self._lane is not None:
            self._lane.close()

    def _check_drained(self) -> None:
        drained = self._drained
        if drained is not None and not drained.done() and not self._in_flight:
            if not any(
                w.pending or w.final is not None for w in self._dirty.values() if not w.lost
            ):
                drained.set_result(None)

    def _kick(self) -> None:
        """Send a flush of the dirty writers, if one may go out now."""
        self._next = None
        loop = self._loop
        if not self._dirty or self._in_flight >= self.DEPTH or loop is None:
            self._check_drained()
            return
        now = loop.time()
        wait = max(self._resume_at, self._last + self._spacing) - now
        if wait > 0 and not (self._closing and now >= self._resume_at):
            self._schedule(wait)  # under load at most one flush per ``spacing``
            return
        lane = self._lane
        on_lane = lane is not None and lane.ready and not self._load_script
        if self._in_flight and not on_lane:
            return  # a task's flush goes out alone (its reply is settled on a later turn)
        entries = self._take()
        if not entries:
            self._check_drained()
            return
        self._last = now
        started = time.perf_counter()
        if on_lane:
            assert lane is not None

            def on_reply(reply: Any, error: Exception | None) -> None:
                self._in_flight -= 1
                self._answered(entries, started, reply, error)

            self._in_flight += 1
            lane.send(self._command(entries), on_reply)
        else:
            self._in_flight = self.DEPTH  # nothing else goes out meanwhile
            self._spawn(self._flush_task(entries, started))

    def _take(self) -> list[_Entry]:
        """The next flush's entries: what each dirty writer has not sent yet."""
        batch, self._dirty = self._dirty, {}
        entries: list[_Entry] = []
        for task_id, writer in batch.items():
            final = None if writer.final_sent else writer.final
            if writer.lost or (len(writer.pending) == writer.sent and final is None):
                continue
            messages = writer.pending[writer.sent :]
            first = writer.flushed_seq + writer.sent + 1
            entries.append((task_id, writer, messages, first, final, writer.epoch))
            writer.sent += len(messages)
            if final is not None:
                writer.final_sent = True
        return entries

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_task(self, entries: list[_Entry], started: float) -> None:
        try:
            replies = await self._send(entries)
        except Exception as exc:
            self._in_flight = 0
            self._answered(entries, started, None, exc)
        else:
            self._in_flight = 0
            self._load_script = False
            self._answered(entries, started, replies, None)

    async def _flush(self, batch: dict[str, _Writer]) -> None:
        """Flush ``batch`` now and settle it (the flusher need not be started)."""
        self._dirty, dirty = batch, self._dirty
        entries = self._take()
        self._dirty.update(dirty)
        if entries:
            started = time.perf_counter()
            self._settle(entries, await self._send(entries), started)

    def _answered(
        self, entries: list[_Entry], started: float, reply: Any, error: Exception | None
    ) -> None:
        """A flush's reply, or its failure: send the next flush, then settle this one (its
        readers' frames are written while the next flush is on its way)."""
        if error is None and isinstance(reply, Exception):
            error = reply  # an error reply of the script call
        if error is None and self._dirty and self._next is None:
            self._kick()  # built on this flush landing: if it did not, Redis refuses that one
        try:
            if error is None:
                self._settle(entries, list(reply), started)
                self._backoff = 0.05
            else:
                self._failed(entries, error)
        except Exception as exc:  # the flusher must outlive any failure: send it all again
            logger.exception("store flush: settling failed")
            self._failed(entries, exc)
        if self._dirty and self._next is None:
            self._kick()
        self._check_drained()

    def _failed(self, entries: list[_Entry], error: Exception) -> None:
        """Keep the flush's messages for the next one: retry, never drop."""
        if isinstance(error, NoScriptError):
            self._load_script = True  # the next flush loads it, at once
        else:
            assert self._loop is not None
            now = self._loop.time()
            if self._resume_at <= now:  # not one more flush failed by the same fault
                logger.warning("store flush failed, retrying: %r", error)
                self._resume_at = now + self._backoff
                self._backoff = min(self._backoff * 2, 2.0)
        for task_id, writer, *_, epoch in entries:
            if epoch == writer.epoch:
                self._resend(task_id, writer)

    def _resend(self, task_id: str, writer: _Writer) -> None:
        """Send ``writer``'s pending messages again from its mark; a reply to a flush still
        in flight for it no longer counts (Redis refused that flush's writes: they did not
        follow on from what it holds)."""
        writer.epoch += 1
        writer.sent = 0
        writer.final_sent = False
        if not writer.lost:
            self._dirty[task_id] = writer

    def _settle(self, entries: list[_Entry], replies: list[Any], started: float) -> None:
        self._on_flushed(time.perf_counter() - started)
        # Settle every writer of the flush before anything else runs, so no reader ever sees
        # a task that Redis already calls finished without its finish message in memory.
        ended: list[tuple[str, _Writer]] = []
        for entry, reply in zip(entries, replies, strict=True):
            task_id, writer, messages, first, final, epoch = entry
            if epoch != writer.epoch:
                continue  # an earlier flush of this writer failed: it is sent again
            n_sent = len(messages)
            writer.sent -= n_sent
            if final is not None:
                writer.final_sent = False
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
                    self._resend(task_id, writer)
                    continue
                if durable < last:  # refused: the task ended elsewhere, or the lease is lost
                    # Its pending messages were never visible: dropping them takes nothing
                    # back from any reader.
                    writer.lost = text.split(" ", 1)[0] or "LOST"
                    writer.pending = []
                    self._resend(task_id, writer)
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
            self._spawn(asyncio.gather(*(self._on_finished(t, w) for t, w in ended)))
