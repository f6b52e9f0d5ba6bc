"""``ListTasks`` over the store's index: filters, exact totals and page tokens.

The store lists the caller's tasks newest first by an opaque cursor and knows nothing of A2A
contexts, so the listing scans the index (at most ``SCAN_LIMIT`` of the caller's tasks, a
bound on the cost of one call), keeps those that pass the filters, and pages through them by
offset: the page token is the offset, which stays exact while no task is created.
"""

from __future__ import annotations

from a2a.types import ListTasksRequest, ListTasksResponse, TaskState
from a2a.utils.errors import InvalidParamsError

from gateway.a2a import _log
from gateway.a2a._notes import TaskNotes
from gateway.a2a._project import STATES
from gateway.protocol import TaskRecord, TaskStatus
from gateway.store import StreamStore

SCAN_LIMIT = 10_000
SCAN_BATCH = 200
DEFAULT_PAGE = 50
MAX_PAGE = 100

_BY_STATE = {state: status for status, state in STATES.items()}


async def _scan(
    store: StreamStore, status: TaskStatus | None, tenant: str | None
) -> list[TaskRecord]:
    records: list[TaskRecord] = []
    cursor: str | None = None
    while len(records) < SCAN_LIMIT:
        page, cursor = await store.list_tasks(status, SCAN_BATCH, cursor, tenant=tenant)
        records.extend(page)
        if cursor is None:
            break
    return records


def _page(params: ListTasksRequest) -> tuple[int, int]:
    size = params.page_size if params.HasField("page_size") else DEFAULT_PAGE
    if not 1 <= size <= MAX_PAGE:
        raise InvalidParamsError(message=f"pageSize must be between 1 and {MAX_PAGE}")
    offset = 0
    if params.page_token:
        if not params.page_token.isascii() or not params.page_token.isdigit():
            raise InvalidParamsError(message="pageToken is not one this server returned")
        offset = int(params.page_token)
    if params.HasField("history_length") and params.history_length < 0:
        raise InvalidParamsError(message="historyLength must not be negative")
    return size, offset


async def list_tasks(
    store: StreamStore, notes: TaskNotes, owner: str | None, params: ListTasksRequest
) -> ListTasksResponse:
    """The tasks of ``owner`` (everyone's with auth off) that match ``params``."""
    size, offset = _page(params)
    status = None
    if params.status != TaskState.TASK_STATE_UNSPECIFIED:
        status = _BY_STATE.get(params.status)
        if status is None:  # a state our tasks never take: nothing matches
            return ListTasksResponse(page_size=size, total_size=0)
    records = await _scan(store, status, owner)
    if params.context_id:
        contexts = await notes.get_many([r.task_id for r in records], _log.NOTE)
        records = [
            r
            for r, c in zip(records, contexts, strict=True)
            if c.get("contextId") == params.context_id
        ]
    if params.HasField("status_timestamp_after"):
        after = params.status_timestamp_after.ToMilliseconds()
        records = [r for r in records if (r.ended_at or r.started_at or r.created_at) >= after]
    page = records[offset : offset + size]
    length = params.history_length if params.HasField("history_length") else None
    tasks = [await _log.snapshot(store, notes, r, length) for r in page]
    more = offset + size < len(records)
    return ListTasksResponse(
        tasks=tasks,
        next_page_token=str(offset + size) if more else "",
        page_size=size,
        total_size=len(records),
    )


__all__ = ["list_tasks"]
