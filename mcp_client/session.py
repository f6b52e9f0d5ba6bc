"""One long-lived MCP client session, kept open by an owner task.

The SDK's transports and ``ClientSession`` are async context managers bound to the task (and
task group) that entered them, so a session cannot simply be opened in one request and used in
the next. :meth:`PooledSession.run` is that owner: started in the pool's task group, it enters
the transport and the session, runs ``initialize``, reports ready, then waits until it is asked
to close. Requests from any task go through :meth:`PooledSession.request` concurrently.

When the connection breaks, the SDK tears its task group down and the owner returns; on the
way out it cancels every request still waiting on this session, so none of them hangs until
its own time limit, and each surfaces as :class:`~mcp_client.errors.ConnectionLost`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import anyio
import httpx2
from anyio.abc import TaskStatus
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_PARAMS
from pydantic import ValidationError

from mcp_client.addresses import guarded_client, listed_client
from mcp_client.errors import (
    ConnectionLost,
    McpClientError,
    TransportRejected,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    describe_exception,
    first_leaf,
)
from mcp_client.target import ServerTarget, Transport

__all__ = ["PooledSession"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_PROBE_TIMEOUT = 5.0

# Errors that mean "the connection is gone", as opposed to "the server said no".
_BROKEN_CONNECTION = (
    httpx2.HTTPError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
)


class PooledSession:
    """An initialized MCP session to one :class:`ServerTarget`, owned by :meth:`run`."""

    def __init__(
        self,
        target: ServerTarget,
        *,
        connect_timeout: float,
        sse_read_timeout: float,
        guard_addresses: bool = True,
    ) -> None:
        if target.transport is Transport.AUTO:
            raise ValueError("a session needs a concrete transport, not auto")
        self.target = target
        # Guarded: every HTTP request checks its target address and connects to it.
        self._client_factory = guarded_client if guard_addresses else listed_client
        self.in_flight = 0
        self.last_used = 0.0
        self.server_name: str | None = None
        self._connect_timeout = connect_timeout
        self._sse_read_timeout = sse_read_timeout
        self._client: ClientSession | None = None
        self._close_requested = anyio.Event()
        self._closed = anyio.Event()
        self._waiting: set[anyio.CancelScope] = set()

    @property
    def alive(self) -> bool:
        """Ready for requests: initialized and neither closing nor broken."""
        return self._client is not None and not self._close_requested.is_set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the session: connect, report ready via ``task_status``, stay open until closed.

        A failure before ready is raised (to the ``TaskGroup.start`` caller) as an
        :class:`UpstreamUnavailable` or :class:`UpstreamTimeout`; a failure after ready is
        logged and ends the session quietly, so the pool's task group never dies of it.
        """
        ready = False
        try:
            # One scope bounds connect + initialize; once ready its deadline is lifted, so the
            # contexts entered inside it are also exited inside it (cancel scopes must nest).
            deadline = anyio.current_time() + self._connect_timeout
            with anyio.CancelScope(deadline=deadline) as connect_scope:
                async with self._open() as client:
                    result = await client.initialize()
                    self.server_name = result.server_info.name
                    connect_scope.deadline = math.inf
                    self._client = client
                    ready = True
                    task_status.started()
                    await self._close_requested.wait()
            if not ready and connect_scope.cancelled_caught:
                raise UpstreamTimeout(
                    f"connecting to {self.target.url} took longer than {self._connect_timeout:g}s"
                )
            if not ready:
                raise UpstreamUnavailable(f"{self.target.url} closed the connection at once")
        except Exception as exc:
            if ready:
                logger.warning(
                    "MCP session to %s ended: %s", self.target.url, describe_exception(exc)
                )
                return
            if isinstance(exc, McpClientError):
                raise
            raise _connect_error(self.target, exc) from exc
        finally:
            self._client = None
            self._close_requested.set()
            self._closed.set()
            for scope in self._waiting:
                scope.cancel()

    async def request(self, operation: Callable[[ClientSession], Awaitable[T]]) -> T:
        """Run ``operation`` on the session; translate failures into the error tree.

        Raises :class:`ConnectionLost` when the connection broke (the caller may retry on a
        fresh session) and :class:`UpstreamError` when the server answered an MCP error.
        """
        client = self._client
        if client is None or not self.alive:
            raise ConnectionLost(f"the session to {self.target.url} is closed")
        self.in_flight += 1
        self.last_used = anyio.current_time()
        scope = anyio.CancelScope()
        self._waiting.add(scope)
        try:
            with scope:
                return await operation(client)
            # Only reached when run() cancelled the scope: the connection died under us.
            raise ConnectionLost(f"the connection to {self.target.url} was lost")
        except MCPError as exc:
            if _means_session_lost(exc) or not await self._answers_ping(client, exc):
                self._close_requested.set()
                raise ConnectionLost(f"the session to {self.target.url} was lost: {exc}") from exc
            raise UpstreamError(exc.message, rpc_code=exc.code) from exc
        except (RuntimeError, ValidationError) as exc:
            # The SDK's verdict on a malformed or unexpected result (e.g. structured content
            # that violates the tool's output schema, or an input-required result).
            raise UpstreamError(f"invalid result from {self.target.url}: {exc}") from exc
        except _BROKEN_CONNECTION as exc:
            self._close_requested.set()
            raise ConnectionLost(
                f"the connection to {self.target.url} broke: {describe_exception(exc)}"
            ) from exc
        finally:
            self._waiting.discard(scope)
            self.in_flight -= 1

    async def _answers_ping(self, client: ClientSession, error: MCPError) -> bool:
        """Whether the session still works after ``error``, probed with one bounded ping.

        Some failures are ambiguous: a restarted server may answer a stale session id with a
        bare HTTP 400 that the SDK can only report as a generic error. Errors that are clearly
        the server's verdict on the request itself (invalid params) skip the probe.
        """
        if error.code == INVALID_PARAMS:
            return True
        with anyio.move_on_after(min(self._connect_timeout, _PROBE_TIMEOUT)):
            try:
                await client.send_ping()
            except (MCPError, *_BROKEN_CONNECTION):
                return False
            return True
        return False

    def close(self) -> None:
        """Ask the owner task to close the session (it exits its contexts and returns)."""
        self._close_requested.set()

    async def wait_closed(self) -> None:
        """Wait until the owner task has finished."""
        await self._closed.wait()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[ClientSession]:
        headers = dict(self.target.headers)
        async with AsyncExitStack() as stack:
            transport: AbstractAsyncContextManager[tuple[Any, Any]]
            if self.target.transport is Transport.SSE:
                transport = sse_client(
                    self.target.url,
                    headers=headers,
                    timeout=self._connect_timeout,
                    sse_read_timeout=self._sse_read_timeout,
                    httpx_client_factory=self._client_factory,
                )
            else:
                timeout = httpx2.Timeout(self._connect_timeout, read=self._sse_read_timeout)
                http = self._client_factory(headers=headers, timeout=timeout)
                await stack.enter_async_context(http)
                transport = streamable_http_client(self.target.url, http_client=http)
            read, write = await stack.enter_async_context(transport)
            yield await stack.enter_async_context(ClientSession(read, write))


def _connect_error(target: ServerTarget, exc: Exception) -> Exception:
    """Convert a failure to open a session into the error tree."""
    leaf = first_leaf(exc)
    if isinstance(leaf, McpClientError):  # the address guard's verdict, as it is
        return type(leaf)(leaf.message)
    if isinstance(leaf, MCPError | httpx2.SSEError) or (
        isinstance(leaf, httpx2.HTTPStatusError) and leaf.response.status_code < 500
    ):
        # The server answered over HTTP, just not as this transport (404/405/wrong type).
        return TransportRejected(
            f"{target.url} rejected the {target.transport.value} transport: "
            f"{describe_exception(leaf)}"
        )
    return UpstreamUnavailable(f"cannot connect to {target.url}: {describe_exception(exc)}")


def _means_session_lost(exc: MCPError) -> bool:
    """Whether an MCP error says the connection or server-side session is gone.

    ``CONNECTION_CLOSED`` comes from the SDK itself; a restarted or expiring server answers a
    stale session id with an HTTP 404/400 whose message names the session.
    """
    return exc.code == CONNECTION_CLOSED or "session" in exc.message.lower()
