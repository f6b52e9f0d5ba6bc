"""Reading a task's history compacted (DESIGN §5), for every reader that replays: SSE, polling.

Works on any :class:`StreamStore` through ``read``, so both stores serve it the same way. The
deltas of a message are skipped only when its final frame is among the durable messages read
here (up to ``LOOKAHEAD`` past the cursor); farther finals leave their deltas in. A cursor
below the log's retention floor (``StreamStore.floor``) gets the ``reset`` message first,
carrying the task's snapshot, with the floor as its seq; the replay goes on after the floor.
"""

from __future__ import annotations

from gateway.protocol import StoredMessage, task_snapshot
from gateway.protocol.compaction import FRAME_MAX_BYTES, Piece, compact, reset_message
from gateway.store.base import StreamStore, TaskNotFound

#: How many messages past the cursor a replay looks at for final frames.
LOOKAHEAD = 20_000
READ_BATCH = 1000


async def replay(
    store: StreamStore, task_id: str, after: int, limit: int, frame_max: int = FRAME_MAX_BYTES
) -> list[StoredMessage]:
    """Up to ``limit`` messages after ``after`` as a replay sends them (see
    :func:`gateway.protocol.compaction.compact`); the pieces of a long final count as one
    message and are never cut from it, so the last item is a whole message and a reader that
    goes on after its seq continues exactly. Raises ``TaskNotFound`` as ``read`` does."""
    floor = await store.floor(task_id)
    frames = store.replays.get(task_id, floor, after)
    if frames is None:
        while True:
            messages = await _history(store, task_id, after, floor)
            latest = await store.floor(task_id)  # a retention pass may have run meanwhile
            if latest <= max(after, floor):
                break
            floor = latest
        frames = compact(messages, frame_max)
        if frames and frames[-1].finish and len(messages) < LOOKAHEAD:
            store.replays.put(task_id, floor, after, frames)  # the whole replay: it is done
    taken = 0
    for end, frame in enumerate(frames):
        if type(frame) is not Piece:
            taken += 1
            if taken == limit:
                return frames[: end + 1]
    return frames


async def _history(store: StreamStore, task_id: str, after: int, floor: int) -> list[StoredMessage]:
    """The durable messages after ``after`` (up to ``LOOKAHEAD``), after a ``reset`` where
    ``after`` is below ``floor``."""
    messages: list[StoredMessage] = []
    if after < floor:
        record = await store.get(task_id)
        if record is None:
            raise TaskNotFound(task_id)
        messages.append(reset_message(floor, task_snapshot(record)))
        after = floor
    while len(messages) < LOOKAHEAD:
        batch = await store.read(task_id, after, READ_BATCH)
        messages += batch
        if len(batch) < READ_BATCH:
            break
        after = batch[-1].seq
    return messages
