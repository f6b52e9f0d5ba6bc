"""The tasks' vocabulary: what a handler receives, the registry of handlers by ``agentType``,
the manager's settings and the errors of submitting and running a task."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.errors import GatewayError
from gateway.printer import Printer
from gateway.protocol import AgentRequest, TaskRecord


@dataclasses.dataclass(frozen=True, slots=True)
class TaskSettings:
    """What the task manager reads of the environment; ``app`` builds it (DESIGN §9).

    ``max_running`` tasks run at once in this process, ``max_queued`` may wait (in the whole
    deployment: the store counts them with each submission); a task gets
    ``task_timeout`` seconds and ``task_retry`` more attempts after its runner vanished. Leases
    last ``lease_ttl`` s and are renewed every ``lease_renew_interval`` s; the sweeper looks for
    lapsed ones every ``sweep_interval`` s. A cancel waits up to ``cancel_wait`` s for the
    owner's confirmation, a shutdown ``shutdown_grace`` s for running tasks. The intake's
    blocked read of the queue returns after ``intake_wait`` s at most, and a shutdown waits for
    it (so it never drops a task it took). ``replica_id`` names this process as the owner of
    its leases.
    """

    replica_id: str = dataclasses.field(default_factory=lambda: secrets.token_hex(4))
    max_running: int = 16
    max_queued: int = 1000
    task_timeout: float = 1800.0
    task_retry: int = 0
    shutdown_grace: float = 5.0
    lease_ttl: float = 10.0
    lease_renew_interval: float = 1.0
    sweep_interval: float = 2.0
    cancel_wait: float = 10.0
    intake_wait: float = 1.0


class QueueFull(GatewayError):
    """Too many tasks wait; the caller should retry after ``retry_after`` seconds."""

    code = "queue_full"
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__("the task queue is full")
        self.retry_after = retry_after


class UnknownAgentType(GatewayError, ValueError):
    """No handler is registered for the requested ``agentType``."""

    code = "invalid_request"
    status_code = 422


class TaskFailure(GatewayError):
    """Raised by a handler to end its task FAILED with a specific ``code`` (a task's error,
    written to its log; its ``status_code`` stays the root's)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class TaskContext:
    """A running task as its handler sees it."""

    task_id: str
    request: AgentRequest
    printer: Printer
    cancelled: asyncio.Event
    services: Mapping[str, Any]


Handler = Callable[[TaskContext], Awaitable[None]]
CompletionCallback = Callable[[TaskRecord], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    """A handler and its optional completion and failure callbacks."""

    handler: Handler
    name: str
    on_complete: CompletionCallback | None = None
    on_failure: CompletionCallback | None = None


class TaskRegistry:
    """Task handlers by ``agentType``: the built-in agents and a user's own jobs alike."""

    def __init__(self) -> None:
        self._handlers: dict[int, Registration] = {}

    def register(
        self,
        agent_type: int,
        handler: Handler,
        *,
        name: str | None = None,
        on_complete: CompletionCallback | None = None,
        on_failure: CompletionCallback | None = None,
    ) -> None:
        """Register ``handler`` for ``agent_type`` (replacing any earlier one)."""
        self._handlers[agent_type] = Registration(
            handler, name or str(getattr(handler, "__name__", "handler")), on_complete, on_failure
        )

    def get(self, agent_type: int) -> Registration | None:
        return self._handlers.get(agent_type)

    def __contains__(self, agent_type: object) -> bool:
        return agent_type in self._handlers

    @property
    def agent_types(self) -> list[int]:
        return sorted(self._handlers)
