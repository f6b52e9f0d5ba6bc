"""A Redis connection of its own for the hot commands: the flusher's, and a task's setup and end.

Every flush is one ``EVALSHA`` with a few hundred arguments. Through redis-py's command calls
that costs more than the script itself: each argument is type-checked and encoded on its own,
and each call takes a connection from the pool and waits for its reply before the next may use
that connection. The lane takes one connection from the store's redis-py pool for itself (TCP,
Unix socket or TLS, with the URL's AUTH and SELECT: redis-py connects it) and keeps it: the
flusher packs the RESP bytes (``pack``, by hiredis), what the calls of one turn of the loop send
goes out in one ``send_packed_command`` (by the lane's writer task), and the replies are read in
order with ``read_response`` (by its reader task) and handed to each call — a future, or a
callback that runs in the reader's turn. One timer watches the oldest call in flight; a call
that outlives its time limit or a dropped connection fails every call in flight with redis-py's
``TimeoutError`` or ``ConnectionError`` (so callers handle them as they handle redis-py's), and
the next call takes a connection again. Only redis-py's public API is used.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: The name this connection shows in ``CLIENT LIST``.
CLIENT_NAME = b"agw-flusher"


def pack(parts: Sequence[bytes | str | int | float]) -> bytes:
    """One RESP command (an array of bulk strings), encoded by hiredis (in C): text as UTF-8,
    numbers as their decimal text."""
    packed: bytes = hiredis.pack_command(cast(Any, tuple(parts)))  # its stub says a 1-tuple
    return packed


#: The lane's setup: RESP2 replies (the shapes its callers read; redis-py 8 connects with
#: RESP3, and the connection goes back to the pool closed), and its name.
_SETUP = pack([b"HELLO", b"2"]) + pack([b"CLIENT", b"SETNAME", CLIENT_NAME])


OnReply = Callable[[Any, "Exception | None"], None]
"""Takes a call's reply (a Redis error reply as a ``ResponseError`` value), or None and the
failure of the connection; it runs in the lane's reader and must not raise."""


class _Callback:
    """A call answered by a function instead of a future: the reply is handled in the turn
    that reads it, with no other task to wake."""

    __slots__ = ("_done", "_on_reply")

    def __init__(self, on_reply: OnReply) -> None:
        self._on_reply = on_reply
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, reply: Any) -> None:
        self._done = True
        self._on_reply(reply, None)

    def set_exception(self, error: Exception) -> None:
        self._done = True
        self._on_reply(None, error)


Call = asyncio.Future[Any] | _Callback


def _redis_error(exc: BaseException) -> Exception:
    """``exc`` as redis-py's error of its kind (an ``OSError`` is a lost connection)."""
    if isinstance(exc, RedisError):
        return exc
    return RedisConnectionError(f"connection to Redis lost: {exc!r}")


class _Link:
    """One connection taken from the pool, with its writer and reader tasks.

    Replies are matched to calls in order (RESP answers a connection's commands in order).
    One timer watches the oldest call in flight (replies come in order, so the others can only
    be younger)."""

    def __init__(self, pool: ConnectionPool, conn: AbstractConnection, timeout: float) -> None:
        self._pool = pool
        self.conn = conn
        self.calls: collections.deque[tuple[Call, float]] = collections.deque()
        self.failure: Exception | None = None
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []  # for the writer's next write
        self._wake_writer: asyncio.Future[None] | None = None
        self._wake_reader: asyncio.Future[None] | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._tasks = (
            self._loop.create_task(self._write_loop()),
            self._loop.create_task(self._read_loop()),
        )
        self.closed: asyncio.Future[None] = self._loop.create_future()

    @property
    def open(self) -> bool:
        return self.failure is None and self.conn.is_connected

    def send(self, data: bytes, calls: Sequence[Call]) -> None:
        """Queue ``data`` (the commands of ``calls``) for the writer's next write, which takes
        all that this turn of the loop queued."""
        if self.failure is not None:
            for call in calls:
                call.set_exception(self.failure)
            return
        due = self._loop.time() + self._timeout
        if not self.calls:
            _wake(self._wake_reader)
        self.calls.extend([(call, due) for call in calls])
        if not self._out:
            _wake(self._wake_writer)
        self._out.append(data)
        if self._watch is None:
            self._watch = self._loop.call_at(due, self._check)

    async def _write_loop(self) -> None:
        try:
            while True:
                if not self._out:
                    self._wake_writer = self._loop.create_future()
                    await self._wake_writer
                    self._wake_writer = None
                out, self._out = self._out, []
                await self.conn.send_packed_command(out, check_health=False)
        except Exception as exc:
            self.fail(_redis_error(exc))

    async def _read_loop(self) -> None:
        calls = self.calls
        try:
            while True:
                if not calls:
                    self._wake_reader = self._loop.create_future()
                    await self._wake_reader
                    self._wake_reader = None
                try:
                    reply = await self.conn.read_response(disable_decoding=True)
                except ResponseError as error:  # an error reply: the call's value
                    reply = error
                if not calls:  # nothing asked for this: the stream is out of step
                    self.fail(RedisConnectionError("unexpected reply from Redis"))
                    return
                call = calls.popleft()[0]
                if not call.done():
                    call.set_result(reply)
        except Exception as exc:
            self.fail(_redis_error(exc))

    def _check(self) -> None:
        """The watch: fail everything if the oldest call's reply is overdue, else look again
        when it will be."""
        self._watch = None
        if not self.calls:
            return
        due = self.calls[0][1]
        if self._loop.time() >= due:
            self.fail(RedisTimeoutError("Redis did not answer in time"))
        else:
            self._watch = self._loop.call_at(due, self._check)

    def fail(self, error: Exception) -> None:
        """Fail every call in flight with ``error``; the connection is closed and given back
        to the pool (which connects it again when it is next taken)."""
        if self.failure is not None:
            return
        self.failure = error
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        calls, self.calls = self.calls, collections.deque()
        self._out = []
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        for call, _ in calls:
            if not call.done():
                call.set_exception(error)
        self._loop.create_task(self._give_back())

    async def _give_back(self) -> None:
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.conn.disconnect(nowait=True)
            await self._pool.release(self.conn)
        finally:
            self.closed.set_result(None)


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class Lane:
    """One connection of a redis-py pool for the lane's calls, pipelined; taken on first use
    and again after a failure."""

    def __init__(self, pool: ConnectionPool, timeout: float = 10.0) -> None:
        self._pool = pool
        self._timeout = timeout
        self._link: _Link | None = None
        self._connecting: asyncio.Future[_Link] | None = None
        self._closed = False

    @classmethod
    def for_pool(cls, pool: ConnectionPool, timeout: float) -> Lane:
        """A lane on a connection of ``pool`` (plain TCP, a Unix socket or TLS alike)."""
        return cls(pool, timeout)

    async def call(self, command: bytes, *, now: bool = False) -> Any:
        """Send one packed command and return its reply (a Redis error reply is raised).
        ``now`` is accepted for callers that want the write at once: every write goes out when
        the lane's writer next runs, with all that the current turn of the loop queued."""
        return (await self.calls([command], now=now))[0]

    @property
    def ready(self) -> bool:
        """Whether the lane is connected (``send`` needs it; ``call`` connects)."""
        return self._link is not None and self._link.open

    def send(self, command: bytes, on_reply: OnReply) -> None:
        """Send one packed command and have ``on_reply`` take its reply (or the connection's
        failure) in the turn that reads it. The lane must be ``ready``."""
        assert self._link is not None
        self._link.send(command, [_Callback(on_reply)])

    async def calls(self, commands: list[bytes], *, now: bool = False) -> list[Any]:
        """Send packed commands in one write; their replies (the first error reply is raised,
        once every reply is in)."""
        link = self._link
        if link is None or not link.open:
            link = await self._connect()
        return await self._roundtrip(link, commands)

    async def _roundtrip(self, link: _Link, commands: list[bytes]) -> list[Any]:
        loop = asyncio.get_running_loop()
        calls = [loop.create_future() for _ in commands]
        link.send(commands[0] if len(commands) == 1 else b"".join(commands), calls)
        try:
            replies = [await call for call in calls]
        except BaseException:
            for call in calls:  # the failure is raised once: the others are settled quietly
                if not call.cancel() and not call.cancelled():
                    call.exception()
            raise
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    async def _connect(self) -> _Link:
        # Concurrent callers share one attempt.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done():
                self._connecting = None

    async def _open(self) -> _Link:
        try:
            async with asyncio.timeout(self._timeout):
                conn = await self._pool.get_connection()
        except TimeoutError as exc:
            raise RedisTimeoutError("connecting to Redis timed out") from exc
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        link = _Link(self._pool, conn, self._timeout)
        loop = asyncio.get_running_loop()
        hello, named = loop.create_future(), loop.create_future()
        link.send(_SETUP, [hello, named])
        try:
            await hello  # an error reply (a Redis without HELLO) leaves RESP2 on anyway
            if isinstance(await named, ResponseError):
                raise await named
        except BaseException:
            link.fail(RedisConnectionError("Redis refused the connection's setup"))
            raise
        if self._closed:  # closed while connecting: the connection goes back at once
            link.fail(RedisConnectionError("the lane is closed"))
            await link.closed
            raise link.failure or RedisConnectionError("the lane is closed")
        self._link = link
        return link

    async def close(self) -> None:
        """Fail what is in flight and give the connection back to the pool (once a connect
        in progress has ended)."""
        self._closed = True
        if self._connecting is not None:
            await asyncio.wait([self._connecting])
        link, self._link = self._link, None
        if link is not None:
            link.fail(RedisConnectionError("the lane is closed"))
            await link.closed
