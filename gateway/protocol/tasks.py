"""Task status, error codes and the task record (the snapshot every API answer is built from)."""

from __future__ import annotations

import dataclasses
import enum
import os
import secrets
import time
from typing import Any


class TaskStatus(enum.StrEnum):
    """Lifecycle of a task: ``PENDING → RUNNING → COMPLETED | FAILED | CANCELLED``."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})

_LEGAL: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    # RUNNING → PENDING: requeued (its worker died and TASK_RETRY allows another run, or
    # its replica shut down and handed it over).
    TaskStatus.RUNNING: TERMINAL_STATUSES | {TaskStatus.PENDING},
}


def is_legal_transition(old: TaskStatus, new: TaskStatus) -> bool:
    """Whether a task may move from ``old`` to ``new`` (terminal states are final)."""
    return new in _LEGAL.get(old, frozenset())


class ErrorCode(enum.StrEnum):
    """``error.code`` of a FAILED task (DESIGN §4)."""

    TIMEOUT = "timeout"
    UPSTREAM_ERROR = "upstream_error"
    INTERRUPTED = "interrupted"
    INTERNAL = "internal"
    INVALID_REQUEST = "invalid_request"


@dataclasses.dataclass(frozen=True, slots=True)
class TaskError:
    """Why a task failed: a stable ``code`` and a human-readable ``message``."""

    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def new_task_id() -> str:
    """An unguessable task id: 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


def new_message_id() -> str:
    """A random message id: ``uuid.uuid4().hex``, the same 32 hex digits (version 4, RFC 4122
    variant) without the ``UUID`` object (a start makes three)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class TaskRecord:
    """The state of one task as the store keeps it; immutable, replaced on every change."""

    task_id: str
    request_id: str
    agent_type: int
    query: str
    status: TaskStatus = TaskStatus.PENDING
    created_at: int = 0
    started_at: int | None = None
    ended_at: int | None = None
    error: TaskError | None = None
    last_seq: int = 0
    result: str | None = None
    request: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The name of the API key that created the task (``None`` with auth off): the one caller
    # who may see it (DESIGN §10). Written with the record, never changed.
    tenant: str | None = None
    # The replica holding the task's lease, and until when.
    owner: str | None = None
    lease_until: int | None = None
    attempts: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_json(self) -> dict[str, Any]:
        """The public snapshot (camelCase), without internal lease fields."""
        return {
            "taskId": self.task_id,
            "requestId": self.request_id,
            "agentType": self.agent_type,
            "status": self.status.value,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "endedAt": self.ended_at,
            "error": self.error.to_json() if self.error else None,
            "lastSeq": self.last_seq,
            "result": self.result,
        }


def task_links(task_id: str) -> dict[str, str]:
    """Where a task's snapshot, its events and its cancel are served (the native API)."""
    base = f"/api/tasks/{task_id}"
    return {"self": base, "events": base + "/events", "cancel": base + "/cancel"}


def task_snapshot(record: TaskRecord) -> dict[str, Any]:
    """The public snapshot with its links: what the API answers and a webhook carries."""
    return {**record.to_json(), "links": task_links(record.task_id)}
