"""A task's log read as A2A: its snapshot now, and its events after a cursor, replayed then tailed.

Everything is read from the store (Redis with several replicas), never from this process's
memory of the task, so any replica serves any task's subscription and a resumed stream
continues exactly where the last ``id:`` it delivered left off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from a2a.server.events import Event
from a2a.types import Message, Task
from google.protobuf.json_format import MessageToJson, ParseDict

from gateway.a2a._notes import TaskNotes
from gateway.a2a._project import Projection
from gateway.protocol import TaskRecord
from gateway.protocol.compaction import PieceJoiner
from gateway.store import StreamStore, replay

NOTE = "a2a"
"""The task-notes kind holding a task's A2A context id and the message that started it."""

READ_BATCH = 500
TAIL_WAIT = 1.0


def first_note(context_id: str, message: Message) -> dict[str, str]:
    """The A2A side of a new task (its context and the user's message): its ``NOTE``, written
    with the task (``TaskNotes.extras``)."""
    return {"contextId": context_id, "message": MessageToJson(message)}


async def projection(store: StreamStore, notes: TaskNotes, record: TaskRecord) -> Projection:
    """An empty :class:`Projection` of ``record`` with its context and history."""
    note = await notes.get(record.task_id, NOTE)
    history: list[Message] = []
    if note.get("message"):
        history.append(ParseDict(orjson.loads(note["message"]), Message()))
    return Projection(record, note.get("contextId") or record.task_id, history)


async def _read(
    store: StreamStore, task_id: str, after: int, upto: int | None
) -> list[dict[str, Any]]:
    """Every message after ``after`` (up to ``upto``), decoded. The whole log is read as a
    replay serves it (compacted, with a ``reset`` below the retention floor, the pieces of a
    long final joined); a prefix up to ``upto`` as written, deltas and all, since the finals
    after ``upto`` are not in it."""
    pieces = PieceJoiner()
    messages: list[dict[str, Any]] = []
    while upto is None or after < upto:
        if upto is None:
            batch = await replay(store, task_id, after, READ_BATCH)
        else:
            batch = [m for m in await store.read(task_id, after, READ_BATCH) if m.seq <= upto]
        for frame in batch:
            message = pieces.feed(orjson.loads(frame.data))
            if message is not None:
                messages.append(message)
        if not batch or batch[-1].finish:
            break
        after = batch[-1].seq
    return messages


async def snapshot(
    store: StreamStore, notes: TaskNotes, record: TaskRecord, history_length: int | None = None
) -> Task:
    """The A2A ``Task`` of ``record`` now: its whole log folded."""
    view = await projection(store, notes, record)
    for message in await _read(store, record.task_id, 0, None):
        view.feed(message)
    return view.task(history_length)


async def events(
    store: StreamStore,
    notes: TaskNotes,
    record: TaskRecord,
    after: int | None,
    *,
    heartbeat: float = 15.0,
    stop: Callable[[], bool] = lambda: False,
) -> AsyncIterator[tuple[int | None, Event | None]]:
    """``(id, event)`` pairs: first the ``Task`` as of ``after`` (``None``: as of now), then
    every event of the messages after it, live, until the task's ``finish``.

    ``id`` is the seq of the log message the event came from, given only on the last event of
    that message (a resume after it would otherwise skip the rest); ``None`` elsewhere.
    The same seq is in the event's ``metadata.seq``, for clients whose SSE reader hides ids
    (the SDK's): ``Last-Event-ID`` = the last ``metadata.seq`` seen resumes exactly.
    ``(None, None)`` is a heartbeat: nothing new for ``heartbeat`` seconds. The events end
    early, between two messages, once ``stop()`` is true (the replica drains, the connection
    is old): the client resumes after the last id it got, on any replica.
    """
    view = await projection(store, notes, record)
    finished = False
    for folded in await _read(store, record.task_id, 0, after):
        view.feed(folded)
        finished = finished or bool(folded.get("finish"))
    task = view.task()
    task.metadata.update({"seq": view.seq})
    yield view.seq, task
    idle = 0.0
    while not finished and not stop():
        batch = await store.tail(record.task_id, view.seq, TAIL_WAIT)
        if not batch:
            idle += TAIL_WAIT
            if idle >= heartbeat:
                idle = 0.0
                yield None, None
            continue
        idle = 0.0
        for message in batch:
            produced = view.feed(orjson.loads(message.data))
            for index, event in enumerate(produced):
                if index < len(produced) - 1:
                    yield None, event
                else:
                    event.metadata.update({"seq": message.seq})
                    yield message.seq, event
            if message.finish:
                finished = True
                break


__all__ = ["NOTE", "events", "first_note", "projection", "snapshot"]
