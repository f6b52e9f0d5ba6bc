"""Pushed frames written straight to uvicorn's transport.

A pushed frame (``_Live.push``) went through the ASGI ``send``: a message dict, a coroutine
started and stepped, uvicorn's checks of the message, the chunk framing, then the socket write.
Per relayed token that was the largest piece of Python left after the write itself. Under
uvicorn's httptools protocol (the server this gateway runs) the frame is written as its HTTP
chunk directly, when nothing could differ from what ``send`` would do: the response has started
with chunked encoding, is not complete, the client is connected and its transport is not
paused. In any other case, and under any other server, ``send`` is used as before.

This is the one place the gateway touches uvicorn's private ``RequestResponseCycle``
(attributes below). It stays because it pays: without it (and the stepped coroutines of
``routes/_stepping.py`` that go with it) ``python -m bench.ab`` at 200 streams by 200 tokens read
+15 to 20 % CPU per token and twice the lag p99 (``bench/README.md``, "Issue 21 part 2").
"""

from __future__ import annotations

from typing import Any

from starlette.types import Send

_CYCLE = ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle")
_ATTRIBUTES = ("transport", "flow", "disconnected", "chunked_encoding", "response_complete")


def direct_cycle(send: Send) -> Any | None:
    """uvicorn's httptools request cycle behind ``send``, if that is what ``send`` is."""
    cycle = getattr(send, "__self__", None)
    kind = type(cycle)
    if (kind.__module__, kind.__qualname__) != _CYCLE:
        return None
    if not all(hasattr(cycle, name) for name in _ATTRIBUTES):
        return None
    if not hasattr(getattr(cycle, "flow", None), "write_paused"):
        return None
    return cycle


def write_chunk(cycle: Any, frame: bytes) -> bool:
    """Write ``frame`` as one HTTP chunk of the response of ``cycle``; False (nothing written)
    where uvicorn's ``send`` must do it (not started chunked, complete, disconnected, paused)."""
    if (
        cycle.chunked_encoding is not True
        or cycle.response_complete
        or cycle.disconnected
        or cycle.flow.write_paused
    ):
        return False
    cycle.transport.write(b"%x\r\n%s\r\n" % (len(frame), frame))
    return True
