"""Compacted replay (DESIGN §5): history comes as final frames, the live tail token by token."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from typing import Any

import anyio
import httpx
import orjson
import pytest

from gateway.protocol import StoredMessage, encode_message
from gateway.protocol.compaction import FRAME_MAX_BYTES, Piece, compact, split_final
from gateway.tasks import TaskContext, TaskRegistry
from tests.gateway.support import echo_query, gateway, merged, read_sse
from tests.helpers import ensure_node_modules

pytestmark = pytest.mark.anyio

WORDS = 2000
LONG = "".join(f"line {i:06d} of a long answer\n" for i in range(8000))  # ~220 KB


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


async def submit(client: httpx.AsyncClient, query: str, agent_type: int = 0) -> str:
    response = await client.post("/api/tasks", json={"query": query, "agentType": agent_type})
    assert response.status_code == 202, response.text
    return str(response.json()["taskId"])


async def finished(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    """The task's snapshot once it has ended (callers bound the wait)."""
    while True:
        body: dict[str, Any] = (await client.get(f"/api/tasks/{task_id}")).json()
        if body["status"] in {"COMPLETED", "FAILED", "CANCELLED"}:
            return body
        await asyncio.sleep(0.02)


def answers(events: list[dict[str, Any]]) -> list[Any]:
    return [value for kind, value in merged(events).values() if kind == "agent_stream"]


def agents(release: threading.Event | None = None) -> TaskRegistry:
    """Type 8: a long answer (deltas, then its ~220 KB final). Type 9: ten deltas, then waits
    for ``release`` before its final frame."""
    registry = TaskRegistry()

    async def long_answer(ctx: TaskContext) -> None:
        answer = ctx.printer.stream("agent_stream")
        for start in range(0, len(LONG), 4096):
            await answer.delta(LONG[start : start + 4096])
        await answer.final(LONG)
        ctx.printer.result("done")

    async def held(ctx: TaskContext) -> None:
        answer = ctx.printer.stream("agent_stream")
        for i in range(10):
            await answer.delta(f"d{i} ")
        if release is not None:
            await asyncio.to_thread(release.wait, 30)
        await answer.final("".join(f"d{i} " for i in range(10)))
        ctx.printer.result("done")

    registry.register(8, long_answer)
    registry.register(9, held)
    return registry


async def test_reconnecting_from_0_to_a_finished_2000_delta_task_yields_a_few_frames(
    store_url: str | None,
) -> None:
    with gateway(store_url, echo_token_delay_ms=0) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, echo_query(WORDS))
            with anyio.fail_after(60):
                snapshot = await finished(client, task_id)
                replayed = await read_sse(client, f"/api/tasks/{task_id}/events")
    assert snapshot["lastSeq"] == WORDS + 7
    # status, plan, task, the answer's final frame, plan, task_summary, result
    assert len(replayed.events) == 7
    assert replayed.seqs == sorted(replayed.seqs) and replayed.seqs[-1] == snapshot["lastSeq"]
    assert replayed.ids == [str(s) for s in replayed.seqs]
    assert answers(replayed.events) == [echo_query(WORDS)]
    assert len(replayed.raw) < 60_000  # was 2,007 frames, over 500 KB


def eventsource(url: str, last_event_id: str | None = None) -> list[dict[str, Any]]:
    """What the npm ``eventsource`` client received from ``url`` up to the finish message."""
    folder = ensure_node_modules()
    argv = ["node", os.path.join(folder, "eventsource_replay.mjs"), url]
    run = subprocess.run(
        argv + ([last_event_id] if last_event_id else []),
        cwd=folder,
        capture_output=True,
        timeout=60,
        check=True,
    )
    lines = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert lines[-1] == {"kind": "close"}, lines[-1]
    return lines[:-1]


async def test_the_eventsource_client_gets_a_finished_task_compacted_and_merges_long_finals() -> (
    None
):
    with gateway(None, echo_token_delay_ms=0, registry=agents()) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, "long", agent_type=8)
            with anyio.fail_after(60):
                snapshot = await finished(client, task_id)
            url = f"{server.url}/api/tasks/{task_id}/events"
            received = await asyncio.to_thread(eventsource, url)
    events = [orjson.loads(r["data"]) for r in received]
    assert answers(events) == [LONG]
    assert all(len(r["data"]) <= FRAME_MAX_BYTES for r in received)
    # A piece has no id: EventSource's cursor moves only when the whole final is in.
    pieces = [r for r, e in zip(received, events, strict=True) if not e["isFinal"]]
    assert len(pieces) >= len(LONG) // FRAME_MAX_BYTES
    assert all(r["lastEventId"] == "" for r in pieces)
    assert len(events) <= 3 + len(LONG) // (FRAME_MAX_BYTES - 1024)
    assert received[-1]["lastEventId"] == str(snapshot["lastSeq"])


async def test_the_eventsource_client_reconnecting_from_0_to_a_2000_delta_task() -> None:
    with gateway(None, echo_token_delay_ms=0) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, echo_query(WORDS))
            with anyio.fail_after(60):
                snapshot = await finished(client, task_id)
            url = f"{server.url}/api/tasks/{task_id}/events"
            received = await asyncio.to_thread(eventsource, url)
    events = [orjson.loads(r["data"]) for r in received]
    assert len(events) == 7
    assert answers(events) == [echo_query(WORDS)] == [snapshot["result"]]
    assert [r["lastEventId"] for r in received] == [str(e["seq"]) for e in events]


async def test_a_resume_inside_a_message_whose_final_is_not_written_gets_its_deltas(
    store_url: str | None,
) -> None:
    release = threading.Event()
    with gateway(store_url, registry=agents(release)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, "held", agent_type=9)
            url = f"/api/tasks/{task_id}/events"
            with anyio.fail_after(30):
                first = await read_sse(client, url, stop_after=5)  # status + 4 deltas
                rest = await read_sse(client, url, headers={"Last-Event-ID": "5"}, stop_after=6)
                polled = (await client.get(f"/api/tasks/{task_id}?after=5")).json()["messages"]
                release.set()
                end = await read_sse(client, url, headers={"Last-Event-ID": "11"})
                compacted = await read_sse(client, url, headers={"Last-Event-ID": "5"})
    assert rest.seqs == [6, 7, 8, 9, 10, 11]  # the deltas, none skipped: no final yet
    assert [m["seq"] for m in polled] == [6, 7, 8, 9, 10, 11]
    assert [e["isFinal"] for e in end.events] == [True, True]
    assert answers(first.events + rest.events + end.events) == [
        "".join(f"d{i} " for i in range(10))
    ]
    # Once the final is written, the same resume skips the deltas and gets it.
    assert compacted.seqs == [12, 13]
    assert answers(first.events + compacted.events) == answers(end.events)


def test_compact_keeps_seqs_and_skips_only_deltas_whose_final_is_present() -> None:
    def message(seq: int, mid: str, final: bool, text: str) -> StoredMessage:
        body = {"messageId": mid, "messageType": "agent_stream", "isFinal": final, "result": text}
        return encode_message(seq, body)

    log = [message(1, "a", False, "x"), message(2, "b", False, "y"), message(3, "a", True, "x!")]
    assert [m.seq for m in compact(log)] == [2, 3]
    assert [m.seq for m in compact(log[:2])] == [1, 2]  # no final yet: nothing skipped


def test_a_long_final_splits_into_bounded_pieces_that_merge_to_it() -> None:
    body = {"messageId": "a", "messageType": "tool_thought", "isFinal": True, "toolThought": LONG}
    pieces = split_final(encode_message(4, body), 16_384)
    assert all(len(p.data) <= 16_384 for p in pieces) and len(pieces) > 1
    assert all(type(p) is Piece for p in pieces[:-1]) and type(pieces[-1]) is StoredMessage
    assert all(p.frame.startswith(b"data: ") for p in pieces[:-1])
    assert pieces[-1].frame.startswith(b"id: 4\n")
    events = [orjson.loads(p.data) for p in pieces]
    stale = {**body, "seq": 3, "isFinal": False, "toolThought": "half a stre"}  # a live delta
    assert merged([stale, *events]) == {"a": ("tool_thought", LONG)}
