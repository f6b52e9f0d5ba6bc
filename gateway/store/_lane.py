"""A lean Redis connection for the hot commands: the flusher's, and a task's setup and end.

Every flush is one ``EVALSHA`` with a few hundred arguments. Through redis-py that costs more
than the script itself: each argument is type-checked and encoded on its own, and each call
takes a connection from the pool, arms a ``wait_for`` task for the write and a timeout context
for the read. The lane writes the RESP bytes the flusher packs (``pack``, by hiredis) on a
connection of its own (what one turn of the loop sends in one write), reads replies with
hiredis, and watches the oldest call in flight with one timer; a call that
outlives its time limit or a dropped connection fails every call in flight with redis-py's
``TimeoutError`` or ``ConnectionError`` (so callers handle them as they handle redis-py's), and
the next call connects again. It speaks plain TCP or a Unix socket; a TLS URL keeps redis-py
(``for_pool`` answers None).

Of redis-py it reads only the pool's ``connection_class`` and ``connection_kwargs`` (where to
connect and how to log in). A lane on redis-py's public connection API instead (a connection
taken from the pool, ``send_packed_command`` and ``read_response`` by a writer and a reader
task) was measured in issue 21 and not kept: ``python -m bench.ab`` at 200 streams by 200
tokens, three interleaved runs on a quiet machine, median 98.8 → 105.0 µs CPU per token and lag
p99 45 → 71 ms (``bench/README.md``, "Issue 21 part 2").
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: The name this connection shows in ``CLIENT LIST``.
CLIENT_NAME = b"agw-flusher"


def pack(parts: Sequence[bytes | str | int | float]) -> bytes:
    """One RESP command (an array of bulk strings), encoded by hiredis (in C): text as UTF-8,
    numbers as their decimal text."""
    packed: bytes = hiredis.pack_command(cast(Any, tuple(parts)))  # its stub says a 1-tuple
    return packed


def _reply_error(message: str) -> ResponseError:
    return NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)


OnReply = Callable[[Any, "Exception | None"], None]
"""Takes a call's reply (a Redis error reply as a ``ResponseError`` value), or None and the
failure of the connection; it runs in the protocol's ``data_received`` and must not raise."""


class _Callback:
    """A call answered by a function instead of a future: the reply is handled in the turn
    that reads it, with no task to wake (what a future's awaiter costs: a turn of the loop)."""

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


class _Protocol(asyncio.Protocol):
    """Replies are matched to calls in order (RESP answers a connection's commands in order).

    What the calls of one turn of the loop send goes out in one write (``send``): a flush, a
    dozen tasks' setups and their ends cost one system call, not one each. One timer watches
    the oldest call in flight (replies come in order, so the others can only be younger)."""

    def __init__(self, timeout: float) -> None:
        self.reader = hiredis.Reader(replyError=_reply_error)
        # each call in flight: its future and the loop time by which its reply is due
        self.calls: collections.deque[tuple[asyncio.Future[Any] | _Callback, float]] = (
            collections.deque()
        )
        self.transport: asyncio.Transport | None = None
        self.failure: Exception | None = None
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []  # to be written at the end of this turn of the loop
        self._watch: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(
        self, data: bytes, calls: Sequence[asyncio.Future[Any] | _Callback], *, now: bool = False
    ) -> None:
        """Queue ``data`` (the commands of ``calls``) for this turn's write; ``now`` writes it
        (and what this turn queued before it) at once."""
        due = self._loop.time() + self._timeout
        self.calls.extend([(call, due) for call in calls])
        if not self._out and not now:
            self._loop.call_soon(self._write)
        self._out.append(data)
        if now:
            self._write()  # a write already scheduled then finds nothing left to write
        if self._watch is None:
            self._watch = self._loop.call_at(due, self._check)

    def _write(self) -> None:
        out, self._out = self._out, []
        transport = self.transport
        if transport is not None and out and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

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

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.calls:  # nothing asked for this: the stream is out of step
                self.fail(RedisConnectionError("unexpected reply from Redis"))
                return
            call = self.calls.popleft()[0]
            if not call.done():
                call.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._out = []
        self._fail_calls(self.failure or RedisConnectionError(f"connection to Redis lost: {exc}"))

    def fail(self, error: Exception) -> None:
        """Close the connection and fail every call in flight with ``error``."""
        self.failure = self.failure or error
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows
        self._fail_calls(self.failure)

    def _fail_calls(self, error: Exception) -> None:
        calls, self.calls = self.calls, collections.deque()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        for call, _ in calls:
            if not call.done():
                call.set_exception(error)


class Lane:
    """One connection, commands pipelined, connected on first use and again after a failure."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        timeout: float = 10.0,
    ) -> None:
        self._host, self._port, self._path = host, port, path
        self._hello: list[bytes] = [pack([b"CLIENT", b"SETNAME", CLIENT_NAME])]
        if password:
            user = [username.encode()] if username else []
            self._hello.insert(0, pack([b"AUTH", *user, password.encode()]))
        if db:
            self._hello.append(pack([b"SELECT", str(db).encode()]))
        self._timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    @classmethod
    def for_pool(cls, pool: Any, timeout: float) -> Lane | None:
        """A lane to the server of a redis-py pool, or None where the lane cannot go (TLS)."""
        kw = pool.connection_kwargs
        common = {
            "username": kw.get("username"),
            "password": kw.get("password"),
            "db": int(kw.get("db") or 0),
            "timeout": timeout,
        }
        if pool.connection_class is Connection:
            return cls(host=kw.get("host", "localhost"), port=int(kw.get("port", 6379)), **common)
        if pool.connection_class is UnixDomainSocketConnection:
            return cls(path=kw["path"], **common)
        return None

    async def call(self, command: bytes, *, now: bool = False) -> Any:
        """Send one packed command and return its reply (a Redis error reply is raised).
        ``now``: written at once, not with the rest of this turn's commands (a flush, which
        readers wait for)."""
        return (await self.calls([command], now=now))[0]

    @property
    def ready(self) -> bool:
        """Whether the lane is connected (``send`` needs it; ``call`` connects)."""
        protocol = self._protocol
        transport = None if protocol is None else protocol.transport
        return transport is not None and not transport.is_closing()

    def send(self, command: bytes, on_reply: OnReply) -> None:
        """Write one packed command at once and have ``on_reply`` take its reply (or the
        connection's failure) in the turn that reads it. The lane must be ``ready``."""
        assert self._protocol is not None
        self._protocol.send(command, [_Callback(on_reply)], now=True)

    async def calls(self, commands: list[bytes], *, now: bool = False) -> list[Any]:
        """Send packed commands in one write; their replies (the first error reply is raised,
        once every reply is in)."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._connect()
        return await self._roundtrip(protocol, commands, now)

    async def _roundtrip(
        self, protocol: _Protocol, commands: list[bytes], now: bool = False
    ) -> list[Any]:
        if protocol.transport is None:
            raise protocol.failure or RedisConnectionError("connection to Redis lost")
        loop = asyncio.get_running_loop()
        calls = [loop.create_future() for _ in commands]
        data = commands[0] if len(commands) == 1 else b"".join(commands)
        protocol.send(data, calls, now=now)
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

    async def _connect(self) -> _Protocol:
        # Concurrent callers share one attempt.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done():
                self._connecting = None

    def _protocol_factory(self) -> _Protocol:
        return _Protocol(self._timeout)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                if self._path is not None:
                    _, protocol = await loop.create_unix_connection(
                        self._protocol_factory, self._path
                    )
                else:
                    _, protocol = await loop.create_connection(
                        self._protocol_factory, self._host, self._port
                    )
                try:
                    await self._roundtrip(protocol, self._hello)
                except BaseException:
                    protocol.fail(RedisConnectionError("Redis refused the connection's setup"))
                    raise
        except TimeoutError as exc:
            raise RedisTimeoutError("connecting to Redis timed out") from exc
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        self._protocol = protocol
        return protocol

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.fail(RedisConnectionError("the lane is closed"))
            self._protocol = None
