"""The session pool: one live MCP session per server (and per set of forwarded headers).

* Sessions are created on first use, under a per-target lock, so 50 concurrent first calls
  open exactly one session; later calls share it concurrently.
* A call that fails because the connection broke is retried once on a fresh session; a
  server that died between calls is therefore reconnected transparently on the next call.
* ``auto`` targets try streamable HTTP first and fall back to legacy SSE when the server
  rejects it; the detected transport is remembered for reconnects.
* Tool lists are cached per target for ``MCP_TOOLS_TTL`` seconds.
* Beyond ``MCP_MAX_SESSIONS`` the least recently used idle sessions are closed.

Every session's owner task runs in the pool's task group (see :meth:`SessionPool.running`,
entered by the app lifespan), and every session is closed when the pool stops.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup
from mcp.client.session import ClientSession
from mcp_types import PaginatedRequestParams

from mcp_client.errors import ConnectionLost, McpClientError, TransportRejected, UpstreamTimeout
from mcp_client.session import PooledSession
from mcp_client.settings import Settings
from mcp_client.target import ServerTarget, Transport

__all__ = ["SessionPool"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_TOOL_PAGES = 100
_CLOSE_GRACE = 5.0


class SessionPool:
    """Pooled MCP sessions keyed by :class:`ServerTarget`; use inside :meth:`running`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._task_group: TaskGroup | None = None
        self._sessions: dict[ServerTarget, PooledSession] = {}
        self._locks: dict[ServerTarget, anyio.Lock] = {}
        self._detected: dict[ServerTarget, Transport] = {}
        self._tools: dict[ServerTarget, tuple[float, list[dict[str, Any]]]] = {}
        self._created: Counter[str] = Counter()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SessionPool]:
        """Own the sessions' task group for the duration of the block; close all on exit."""
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            try:
                yield self
            finally:
                self._task_group = None
                await self._close_all()
                task_group.cancel_scope.cancel()

    async def list_tools(self, target: ServerTarget, timeout: float) -> list[dict[str, Any]]:
        """The server's tools as JSON-ready dicts (camelCase), served from cache when fresh."""
        cached = self._tools.get(target)
        if cached is not None and anyio.current_time() < cached[0]:
            return cached[1]
        tools, _ = await self._with_session(target, _list_all_tools, timeout)
        if self._settings.tools_ttl > 0:
            self._tools[target] = (anyio.current_time() + self._settings.tools_ttl, tools)
        return tools

    async def call_tool(
        self, target: ServerTarget, name: str, arguments: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Call tool ``name``; the CallToolResult dumped by alias (``content``, ``isError``...)."""

        async def call(client: ClientSession) -> dict[str, Any]:
            result = await client.call_tool(name, arguments)
            return result.model_dump(by_alias=True, mode="json", exclude_none=True)

        data, _ = await self._with_session(target, call, timeout)
        return data

    async def ping(self, target: ServerTarget, timeout: float) -> dict[str, Any]:
        """Ping the server (opening a session if needed); report what answered and how."""

        async def ping(client: ClientSession) -> None:
            await client.send_ping()

        _, session = await self._with_session(target, ping, timeout)
        return {
            "serverUrl": target.url,
            "transport": session.target.transport.value,
            "serverName": session.server_name,
        }

    def stats(self) -> dict[str, Any]:
        """Open sessions and how many sessions were ever created per server URL."""
        return {
            "open": len(self._sessions),
            "created": dict(self._created),
            "sessions": [
                {
                    "serverUrl": session.target.url,
                    "transport": session.target.transport.value,
                    "inFlight": session.in_flight,
                    "alive": session.alive,
                }
                for session in self._sessions.values()
            ],
        }

    async def _with_session(
        self,
        target: ServerTarget,
        operation: Callable[[ClientSession], Awaitable[T]],
        timeout: float,
    ) -> tuple[T, PooledSession]:
        """Run ``operation`` on the target's session: call time limit, one retry if it broke."""
        try:
            return await self._attempt(target, operation, timeout)
        except ConnectionLost:
            logger.info("MCP session to %s broke; retrying on a fresh one", target.url)
            return await self._attempt(target, operation, timeout)

    async def _attempt(
        self,
        target: ServerTarget,
        operation: Callable[[ClientSession], Awaitable[T]],
        timeout: float,
    ) -> tuple[T, PooledSession]:
        session = await self._acquire(target)
        try:
            with anyio.move_on_after(timeout):
                return await session.request(operation), session
        except ConnectionLost:
            self._discard(target, session)
            raise
        raise UpstreamTimeout(f"the call to {target.url} took longer than {timeout:g}s")

    async def _acquire(self, target: ServerTarget) -> PooledSession:
        session = self._sessions.get(target)
        if session is not None and session.alive:
            return session
        lock = self._locks.setdefault(target, anyio.Lock())
        try:
            async with lock:
                session = self._sessions.get(target)
                if session is not None and session.alive:
                    return session
                if session is not None:
                    self._discard(target, session)
                session = await self._open(target)
                self._sessions[target] = session
                self._evict_idle(keep=target)
                return session
        finally:
            # Do not keep a lock per URL that never worked (callers choose the URLs).
            if target not in self._sessions and not lock.locked():
                self._locks.pop(target, None)

    async def _open(self, target: ServerTarget) -> PooledSession:
        transport = self._detected.get(target, target.transport)
        if transport is not Transport.AUTO:
            return await self._start(replace(target, transport=transport))
        try:
            session = await self._start(replace(target, transport=Transport.STREAMABLE_HTTP))
        except TransportRejected as first:
            logger.info("%s rejected streamable HTTP (%s); trying SSE", target.url, first.message)
            try:
                session = await self._start(replace(target, transport=Transport.SSE))
            except McpClientError as second:
                # Report both attempts: the SSE error alone would hide why HTTP failed.
                raise type(second)(f"{first.message}; then {second.message}") from second
        self._detected[target] = session.target.transport
        return session

    async def _start(self, concrete: ServerTarget) -> PooledSession:
        if self._task_group is None:
            raise RuntimeError("the session pool is not running")
        session = PooledSession(
            concrete,
            connect_timeout=self._settings.connect_timeout,
            sse_read_timeout=self._settings.sse_read_timeout,
            # Listed servers are the operator's choice; any other must be global (addresses.py).
            guard_addresses=self._settings.allowed_servers is None,
        )
        # Shielded (and bounded by the connect timeout inside run()) so that a caller who
        # gives up mid-connect cannot leave an unregistered session running in the group.
        with anyio.CancelScope(shield=True):
            await self._task_group.start(session.run)
        self._created[concrete.url] += 1
        logger.info("opened MCP session to %s over %s", concrete.url, concrete.transport.value)
        return session

    def _discard(self, target: ServerTarget, session: PooledSession) -> None:
        if self._sessions.get(target) is session:
            del self._sessions[target]
        self._tools.pop(target, None)
        session.close()

    def _evict_idle(self, keep: ServerTarget) -> None:
        excess = len(self._sessions) - self._settings.max_sessions
        if excess <= 0:
            return
        idle = [
            (session.last_used, target)
            for target, session in self._sessions.items()
            if target != keep and session.in_flight == 0
        ]
        for _, target in sorted(idle, key=lambda item: item[0])[:excess]:
            self._discard(target, self._sessions[target])
            self._detected.pop(target, None)
            lock = self._locks.get(target)
            if lock is not None and not lock.locked():
                del self._locks[target]

    async def _close_all(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        self._tools.clear()
        for session in sessions:
            session.close()
        # Let owners exit their contexts (e.g. DELETE the streamable HTTP session) politely,
        # but never let shutdown hang on a slow server: the caller cancels the rest.
        with anyio.move_on_after(_CLOSE_GRACE, shield=True):
            for session in sessions:
                await session.wait_closed()


async def _list_all_tools(client: ClientSession) -> list[dict[str, Any]]:
    """Every page of ``tools/list``, each tool dumped by alias with the JoyAgent keys present."""
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(_MAX_TOOL_PAGES):
        params = PaginatedRequestParams(cursor=cursor) if cursor else None
        result = await client.list_tools(params=params)
        for tool in result.tools:
            item = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
            item.setdefault("description", None)
            item.setdefault("annotations", None)
            tools.append(item)
        cursor = result.next_cursor
        if not cursor:
            break
    return tools
