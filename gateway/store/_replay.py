"""Reading a task's history compacted (DESIGN §5), for every reader that replays: SSE, polling.

Works on any :class:`StreamStore` through ``read``, so both stores serve it the same way. The
deltas of a message are skipped only when its final frame is among the durable messages read
here (up to ``LOOKAHEAD`` past the cursor); farther finals leave their deltas in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.protocol import StoredMessage
from gateway.protocol.compaction import FRAME_MAX_BYTES, Piece, compact

if TYPE_CHECKING:
    from gateway.store.base import StreamStore

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
    messages: list[StoredMessage] = []
    cursor = after
    while len(messages) < LOOKAHEAD:
        batch = await store.read(task_id, cursor, READ_BATCH)
        messages += batch
        if len(batch) < READ_BATCH:
            break
        cursor = batch[-1].seq
    frames = compact(messages, frame_max)
    taken = 0
    for end, frame in enumerate(frames):
        if type(frame) is not Piece:
            taken += 1
            if taken == limit:
                return frames[: end + 1]
    return frames
