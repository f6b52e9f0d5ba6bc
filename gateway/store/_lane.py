"""A lean Redis connection for the hot commands: the flusher's, and a task's setup and end.

Every flush is one ``EVALSHA`` with a few hundred arguments. Through redis-py that costs more
than the script itself: each argument is type-checked and encoded on its own, and each call
takes a connection from the pool, arms a ``wait_for`` task for the write and a timeout context
for the read. The lane writes the RESP bytes the flusher packs (``pack``, by hiredis) on a
connection of its own, reads replies with hiredis, and arms one timer per call; a call that
outlives its time limit or a dropped connection fails every call in flight with redis-py's
``TimeoutError`` or ``ConnectionError`` (so callers handle them as they handle redis-py's), and
the next call connects again. It speaks plain TCP or a Unix socket; a TLS URL keeps redis-py
(``for_pool`` answers None).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
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


class _Protocol(asyncio.Protocol):
    """Replies are matched to calls in order (RESP answers a connection's commands in order)."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=_reply_error)
        self.calls: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.failure: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.calls:  # nothing asked for this: the stream is out of step
                self.fail(RedisConnectionError("unexpected reply from Redis"))
                return
            call = self.calls.popleft()
            if not call.done():
                call.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail_calls(self.failure or RedisConnectionError(f"connection to Redis lost: {exc}"))

    def fail(self, error: Exception) -> None:
        """Close the connection and fail every call in flight with ``error``."""
        self.failure = self.failure or error
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows
        self._fail_calls(self.failure)

    def _fail_calls(self, error: Exception) -> None:
        calls, self.calls = self.calls, collections.deque()
        for call in calls:
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

    async def call(self, command: bytes) -> Any:
        """Send one packed command and return its reply (a Redis error reply is raised)."""
        return (await self.calls([command]))[0]

    async def calls(self, commands: list[bytes]) -> list[Any]:
        """Send packed commands in one write; their replies (the first error reply is raised,
        once every reply is in)."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._connect()
        return await self._roundtrip(protocol, commands)

    async def _roundtrip(self, protocol: _Protocol, commands: list[bytes]) -> list[Any]:
        loop = asyncio.get_running_loop()
        transport = protocol.transport
        if transport is None:
            raise protocol.failure or RedisConnectionError("connection to Redis lost")
        calls = [loop.create_future() for _ in commands]
        protocol.calls.extend(calls)
        transport.write(b"".join(commands))
        timer = loop.call_later(
            self._timeout, protocol.fail, RedisTimeoutError("Redis did not answer in time")
        )
        try:
            replies = [await call for call in calls]
        except BaseException:
            for call in calls:  # the failure is raised once: the others are settled quietly
                if not call.cancel() and not call.cancelled():
                    call.exception()
            raise
        finally:
            timer.cancel()
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

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                if self._path is not None:
                    _, protocol = await loop.create_unix_connection(_Protocol, self._path)
                else:
                    _, protocol = await loop.create_connection(_Protocol, self._host, self._port)
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
