"""Running one claimed task: the handler in its own asyncio task, its outcome written last."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from gateway.printer import Printer
from gateway.protocol import (
    AgentRequest,
    ErrorCode,
    StoredMessage,
    TaskError,
    TaskRecord,
    TaskStatus,
)
from gateway.store import StreamStore, TaskEnded, TaskNotFound
from gateway.tasks.context import Registration, TaskContext, TaskFailure, TaskRegistry

logger = logging.getLogger(__name__)

_KNOWN_CODES = frozenset(code.value for code in ErrorCode)


class RunningTask:
    """A task running in this process; ``stop(reason)`` cancels its handler for real."""

    __slots__ = ("cancelled", "done", "handler_task", "reason")

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.handler_task: asyncio.Future[None] | None = None
        self.reason: str | None = None

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.cancelled.set()
        if self.handler_task is not None:
            self.handler_task.cancel()


def _error_for(exc: BaseException) -> TaskError:
    code = getattr(exc, "code", None)
    if isinstance(exc, TaskFailure) or (isinstance(code, str) and code in _KNOWN_CODES):
        return TaskError(str(code), str(getattr(exc, "message", None) or exc))
    return TaskError(ErrorCode.INTERNAL, "the task failed with an internal error")


@dataclasses.dataclass(frozen=True, slots=True)
class Collaborators:
    """What running a task uses, each named: the manager builds one and hands it down, so the
    runner never sees the manager itself.

    ``owner`` and ``lease_ms`` claim the task; ``running`` is where the manager finds it to
    stop it; ``hand_over`` passes a task this process gives up to another replica;
    ``on_append`` is told of every message the task's printer appends.
    """

    store: StreamStore
    registry: TaskRegistry
    services: Mapping[str, Any]
    owner: str
    lease_ms: int
    task_timeout: float
    running: MutableMapping[str, RunningTask]
    hand_over: Callable[[str], Awaitable[bool]]
    on_append: Callable[[StoredMessage], None] | None = None


@dataclasses.dataclass(slots=True)
class Launch:
    """A claimed task as :func:`launch` left it: registered as running, and where the store
    could append at once its RUNNING status written and its handler's task started."""

    record: TaskRecord
    registration: Registration | None
    printer: Printer
    running: RunningTask
    status_sent: bool = False


def launch(record: TaskRecord, using: Collaborators, request: AgentRequest | None = None) -> Launch:
    """Begin a claimed task in the caller's turn of the loop: what the runner's first step
    did, where nothing has to wait (the store appends the RUNNING status without waiting).

    A start created here goes on in the turn that learnt its record is written: its handler's
    first step (the upstream request) runs on the next turn, not two turns later behind the
    runner task's first step. ``request`` is the task's request already validated. Whatever
    cannot be done now (or fails) is left to :func:`run_task`, which reports it.
    """
    started = _registered(record, using)
    registration = started.registration
    if registration is None:
        return started
    with contextlib.suppress(Exception):  # the runner meets it again, and reports it
        sent = started.printer.send_now("status", TaskStatus.RUNNING.value)
        started.status_sent = sent is not None
        if started.status_sent:
            _start_handler(started, registration, using, request)
    return started


async def run_task(task_id: str, *, using: Collaborators, launched: Launch | None = None) -> None:
    """Claim ``task_id`` (unless it comes ``launched``: created claimed, and begun), run its
    handler under the total timeout, and end its log."""
    if launched is None:
        record = await using.store.claim(task_id, using.owner, using.lease_ms)
        if record is None:
            return  # cancelled while queued, or another worker has it
        launched = _registered(record, using)
    registration, printer, running = launched.registration, launched.printer, launched.running
    try:
        status, error = await _run_handler(using, launched)
        if status is TaskStatus.PENDING:  # handed over to another replica
            if not await using.hand_over(task_id):
                await _finish(printer, TaskStatus.FAILED, _interrupted(), registration)
        else:
            await _finish(printer, status, error, registration)
    except TaskEnded:
        pass  # ended elsewhere (cancelled while pending, or swept): nothing more to write
    except asyncio.CancelledError:
        running.stop("shutdown")
        await _finish(printer, TaskStatus.FAILED, _interrupted(), registration)
        raise
    finally:
        using.running.pop(task_id, None)
        running.done.set_result(None)


def _registered(record: TaskRecord, using: Collaborators) -> Launch:
    """A claimed task registered as running, nothing sent yet."""
    registration = using.registry.get(record.agent_type)
    printer = Printer(using.store, record.task_id, record.request_id, using.on_append)
    started = Launch(record, registration, printer, RunningTask())
    using.running[record.task_id] = started.running
    return started


def _start_handler(
    started: Launch,
    registration: Registration,
    using: Collaborators,
    request: AgentRequest | None = None,
) -> None:
    """The handler's own task (the runner supervises it)."""
    record, running = started.record, started.running
    ctx = TaskContext(
        task_id=record.task_id,
        request=request or AgentRequest.model_validate(record.request),
        printer=started.printer,
        cancelled=running.cancelled,
        services=using.services,
    )
    running.handler_task = asyncio.ensure_future(registration.handler(ctx))
    if running.reason is not None:  # a stop that raced the start
        running.handler_task.cancel()


async def _run_handler(
    using: Collaborators, started: Launch
) -> tuple[TaskStatus, TaskError | None]:
    record, registration, running = started.record, started.registration, started.running
    if running.handler_task is None:
        try:
            if not started.status_sent:
                await started.printer.send("status", TaskStatus.RUNNING.value)
                started.status_sent = True
            if registration is None:
                raise TaskFailure(ErrorCode.INVALID_REQUEST, f"no handler for {record.agent_type}")
            _start_handler(started, registration, using)
        except (TaskEnded, asyncio.CancelledError):
            raise
        except Exception as exc:
            logger.exception("task %s failed before its handler ran", record.task_id)
            return TaskStatus.FAILED, _error_for(exc)
    return await _supervise(running, using.task_timeout)


def _interrupted() -> TaskError:
    return TaskError(ErrorCode.INTERRUPTED, "the gateway stopped while the task ran")


async def _supervise(running: RunningTask, timeout: float) -> tuple[TaskStatus, TaskError | None]:
    handler_task = running.handler_task
    if handler_task is None:
        raise RuntimeError("handler not started")
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(handler_task)
        return TaskStatus.COMPLETED, None
    except TimeoutError:
        running.stop("timeout")
        await _drain(handler_task)
        return TaskStatus.FAILED, TaskError(ErrorCode.TIMEOUT, f"the task ran over {timeout:g} s")
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            running.stop("shutdown")
            await _drain(handler_task)
            raise
        if running.reason == "cancel":
            return TaskStatus.CANCELLED, None
        if running.reason == "lost":
            raise TaskEnded("lease lost") from None
        if running.reason == "handover":
            return TaskStatus.PENDING, None
        return TaskStatus.FAILED, _interrupted()
    except Exception as exc:
        if running.reason == "cancel":
            return TaskStatus.CANCELLED, None
        error = _error_for(exc)
        if error.code == ErrorCode.INTERNAL:
            logger.error("task handler crashed", exc_info=exc)
        return TaskStatus.FAILED, error


async def _drain(handler_task: asyncio.Future[None]) -> None:
    """Wait (bounded) for a cancelled handler to finish its cleanup."""
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(asyncio.shield(handler_task), 10)


async def _finish(
    printer: Printer,
    status: TaskStatus,
    error: TaskError | None,
    registration: Registration | None,
) -> None:
    """Write the one ``finish`` message and the terminal status; run the callbacks."""
    outcome = printer.outcome
    body: dict[str, Any]
    result: str | None
    if status is TaskStatus.COMPLETED:
        text = outcome.result if outcome else printer.partial_answer
        result_map = {
            "taskSummary": (outcome.task_summary if outcome else None) or text,
            "fileList": outcome.file_list if outcome else [],
        }
        body = printer.body("result", text, None, True, resultMap=result_map)
        result = text
    elif status is TaskStatus.CANCELLED:
        body = printer.body("status", status.value, None, True)
        result = printer.partial_answer or None
    else:
        error = error or TaskError(ErrorCode.INTERNAL, "failed")
        body = printer.body("error", error.to_json(), None, True)
        result = printer.partial_answer or None
    store = printer.store
    try:
        message = await asyncio.shield(
            store.finish(printer.task_id, status, body, error=error, result=result)
        )
    except (TaskEnded, TaskNotFound):
        return
    if message is not None:
        printer.notify(message)
    if registration is not None:
        callback = (
            registration.on_complete if status is TaskStatus.COMPLETED else registration.on_failure
        )
        if callback is not None:
            record = await store.get(printer.task_id)
            if record is not None:
                try:
                    await callback(record)
                except Exception:
                    logger.exception("completion callback of %s failed", printer.task_id)
