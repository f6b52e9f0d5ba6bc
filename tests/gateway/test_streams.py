"""SSE streams of the gateway against a real uvicorn server, with both stores."""

from __future__ import annotations

import asyncio
import gc
import inspect
import socket
from collections.abc import Awaitable
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import Message

from gateway.metrics import GatewayMetrics
from gateway.protocol import TaskStatus
from gateway.routes._stepping import DisconnectWatch
from gateway.routes.sse import LogStream, StreamSettings
from gateway.security import SecurityMiddleware
from gateway.store import MemoryStore
from gateway.tasks import TaskContext, TaskRegistry
from tests.gateway.stores import body, running
from tests.gateway.support import echo_query, gateway, merged, read_sse

pytestmark = pytest.mark.anyio

# status + plan + task + N deltas + final + plan + task_summary + result
ECHO_OVERHEAD = 7


async def completed(client: httpx.AsyncClient, task_id: str) -> None:
    """Poll until the task is COMPLETED (callers bound the wait)."""
    while (await client.get(f"/api/tasks/{task_id}")).json()["status"] != "COMPLETED":
        await asyncio.sleep(0.05)


async def a_slow_client_was_cut(client: httpx.AsyncClient) -> None:
    """Poll ``/metrics`` until a reader has been cut off at the send limit."""
    while "agw_slow_client_disconnects_total 0.0" in (await client.get("/metrics")).text:
        await asyncio.sleep(0.1)


def flooding(count: int, first: tuple[str, asyncio.Event] | None = None) -> TaskRegistry:
    """Agent type 7: ``count`` agent_stream messages of 16 KB as fast as the log takes them
    (after a ``task`` message with ``first``'s text and its event, when given)."""
    big = "x" * 16_384
    registry = TaskRegistry()

    async def flood(ctx: TaskContext) -> None:
        if first is not None:
            await ctx.printer.send("task", first[0])
            await first[1].wait()
        for i in range(count):
            await ctx.printer.send("agent_stream", big, is_final=False, n=i)
        ctx.printer.result("done")

    registry.register(7, flood)
    return registry


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


async def submit(client: httpx.AsyncClient, query: str, agent_type: int = 0, **kw: Any) -> str:
    response = await client.post("/api/tasks", json={"query": query, "agentType": agent_type, **kw})
    assert response.status_code == 202, response.text
    return str(response.json()["taskId"])


async def test_three_concurrent_readers_each_see_every_message_once_in_order(
    store_url: str | None,
) -> None:
    total = 200
    with gateway(store_url, echo_token_delay_ms=2) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, echo_query(total - ECHO_OVERHEAD))
            url = f"/api/tasks/{task_id}/events"
            with anyio.fail_after(30):
                results = await asyncio.gather(*(read_sse(client, url) for _ in range(3)))
    for result in results:
        assert result.seqs == list(range(1, total + 1))
        assert result.ids == [str(s) for s in range(1, total + 1)]
        assert result.events[-1]["finish"] is True
        assert sum(e["finish"] for e in result.events) == 1


@pytest.mark.parametrize("k", [0, 57, 200])
async def test_reconnect_with_last_event_id_yields_exactly_the_rest(
    store_url: str | None, k: int
) -> None:
    total = 200
    with gateway(store_url, echo_token_delay_ms=1) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, echo_query(total - ECHO_OVERHEAD))
            url = f"/api/tasks/{task_id}/events"
            with anyio.fail_after(30):
                first = await read_sse(client, url, stop_after=k) if k else None
                if first is not None:
                    assert first.seqs[-1] == k
                full = await read_sse(client, url)  # wait for the end
                assert full.seqs[-1] == total
                resumed = await read_sse(client, url, headers={"Last-Event-ID": str(k)})
    if k == total:
        assert resumed.status == 204 and resumed.events == []
    else:
        assert resumed.status == 200
        # Compacted replay (DESIGN §5): the finished answer comes as its final frame alone,
        # every other message with its own seq; merged, the reader has all of it.
        assert resumed.seqs == sorted(set(resumed.seqs))
        assert resumed.seqs[0] > k and resumed.seqs[-1] == total
        assert all(e["isFinal"] for e in resumed.events)
        assert len(resumed.events) <= ECHO_OVERHEAD
        before = first.events if first is not None else []
        assert merged(before + resumed.events) == merged(full.events)


async def test_resume_mid_stream_while_the_task_still_runs(store_url: str | None) -> None:
    with gateway(store_url, echo_token_delay_ms=10) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, echo_query(60))
            url = f"/api/tasks/{task_id}/events"
            with anyio.fail_after(30):
                first = await read_sse(client, url, stop_after=10)
                rest = await read_sse(client, f"{url}?after={first.seqs[-1]}")
    assert first.seqs + rest.seqs == list(range(1, 60 + ECHO_OVERHEAD + 1))


async def test_polling_after_n_returns_exactly_the_later_messages_then_the_snapshot(
    store_url: str | None,
) -> None:
    with gateway(store_url, echo_token_delay_ms=5) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, echo_query(30))
            seqs: list[int] = []
            polled: list[dict[str, Any]] = []
            after = 0
            with anyio.fail_after(30):
                while True:
                    r = await client.get(
                        f"/api/tasks/{task_id}", params={"after": after, "limit": 7}
                    )
                    assert r.status_code == 200
                    body = r.json()
                    got = [m["seq"] for m in body["messages"]]
                    assert got == sorted(set(got)) and all(s > after for s in got)
                    assert len(got) <= 7
                    seqs += got
                    polled += body["messages"]
                    after = body["nextAfter"]
                    if body["status"] == "COMPLETED" and after == body["lastSeq"]:
                        assert "Retry-After" not in r.headers
                        break
                    if not got:
                        assert r.headers["Retry-After"] == "1"
                        await asyncio.sleep(0.02)
    # Deltas whose final frame was already in the log when polled are left out (compacted).
    assert seqs[-1] == 30 + ECHO_OVERHEAD and set(seqs) <= set(range(1, seqs[-1] + 1))
    answer = [v for kind, v in merged(polled).values() if kind == "agent_stream"]
    assert answer == [echo_query(30)]
    assert body["result"] == echo_query(30)
    assert body["messages"] == [] or body["messages"][-1]["finish"] is True


async def test_cancel_during_a_run_keeps_partial_output_and_is_idempotent(
    store_url: str | None,
) -> None:
    with gateway(store_url, echo_token_delay_ms=20) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, echo_query(500))
            url = f"/api/tasks/{task_id}/events"
            with anyio.fail_after(30):
                await read_sse(client, url, stop_after=8)
                first = await client.post(f"/api/tasks/{task_id}/cancel")
                assert first.status_code == 200
                snap = first.json()
                assert snap["status"] == "CANCELLED"
                events = (await read_sse(client, f"{url}?after=0")).events
                second = await client.post(f"/api/tasks/{task_id}/cancel")
                await asyncio.sleep(0.3)  # a stopped agent would have appended ~15 more by now
                later = (await client.get(f"/api/tasks/{task_id}")).json()
    assert second.status_code == 200 and second.json() == snap
    assert events[-1]["messageType"] == "status" and events[-1]["status"] == "CANCELLED"
    assert events[-1]["finish"] is True and events[-1]["seq"] == snap["lastSeq"]
    deltas = [e for e in events if e["messageType"] == "agent_stream"]
    assert 5 <= len(deltas) < 500
    assert snap["result"] and snap["result"].startswith("w0 w1 w2")
    assert later["lastSeq"] == snap["lastSeq"]


async def read_with_resume(client: httpx.AsyncClient, task_id: str) -> list[int]:
    """Read a task to its end like a browser: on a dropped connection, resume after the last id."""
    seqs: list[int] = []
    for _ in range(100):
        headers = {"Last-Event-ID": str(seqs[-1])} if seqs else {}
        try:
            result = await read_sse(client, f"/api/tasks/{task_id}/events", headers=headers)
        except httpx.RemoteProtocolError:
            continue  # cut off mid-stream; what it had parsed is lost with it, so resume
        seqs += result.seqs
        if result.status == 204 or (result.events and result.events[-1]["finish"]):
            break
    return seqs


async def test_a_reader_that_never_reads_delays_neither_the_task_nor_another_reader(
    store_url: str | None,
) -> None:
    registry = flooding(1500)  # ~24 MB: far more than the socket buffers hold
    with gateway(store_url, registry=registry, send_timeout=1.0) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, "flood", agent_type=7)
            stuck = socket.create_connection(("127.0.0.1", server.port))
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.sendall(f"GET /api/tasks/{task_id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            try:
                with anyio.fail_after(60):
                    seqs = await read_with_resume(client, task_id)
                    snap = (await client.get(f"/api/tasks/{task_id}")).json()
                    await a_slow_client_was_cut(client)  # the stuck reader, at the send limit
            finally:
                stuck.close()
    assert seqs == list(range(1, 1503))
    assert snap["status"] == "COMPLETED"


async def test_frames_have_ids_retry_heartbeats_and_the_sse_headers() -> None:
    registry = TaskRegistry()

    async def slow(ctx: TaskContext) -> None:
        await ctx.printer.send("task", "waiting")
        await asyncio.sleep(0.6)
        ctx.printer.result("ok")

    registry.register(9, slow)
    with gateway(None, registry=registry, heartbeat_interval=0.1, sse_retry_ms=1234) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, "x", agent_type=9)
            with anyio.fail_after(10):
                result = await read_sse(client, f"/api/tasks/{task_id}/events")
    assert result.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert result.headers["cache-control"] == "no-cache, no-transform"
    assert result.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in result.headers
    assert result.raw.startswith(b"retry: 1234\n\n")
    assert result.retry == 1234
    assert "ping" in [c.strip() for c in result.comments]
    assert b"id: 1\ndata: {" in result.raw
    assert b"event:" not in result.raw
    assert result.seqs == [1, 2, 3]


async def test_a_stream_ends_cleanly_at_sse_max_age_and_the_client_resumes() -> None:
    with gateway(None, echo_token_delay_ms=20, sse_max_age=0.3) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, echo_query(40))
            seqs: list[int] = []
            with anyio.fail_after(30):
                for _ in range(50):
                    headers = {"Last-Event-ID": str(seqs[-1])} if seqs else {}
                    r = await read_sse(client, f"/api/tasks/{task_id}/events", headers=headers)
                    if r.status == 204:
                        break
                    seqs += r.seqs
    assert seqs == list(range(1, 40 + ECHO_OVERHEAD + 1))


async def test_post_with_accept_event_stream_answers_the_task_as_sse(store_url: str | None) -> None:
    with gateway(store_url) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            with anyio.fail_after(30):
                result = await read_sse(
                    client,
                    "/api/tasks",
                    method="POST",
                    headers={"Accept": "text/event-stream"},
                    json={"query": "hello streaming world", "agentType": 0},
                )
                task_id = result.headers["x-task-id"]
                snap = (await client.get(f"/api/tasks/{task_id}")).json()
    assert result.status == 200
    assert result.events[-1]["messageType"] == "result"
    assert result.events[-1]["result"] == "hello streaming world"
    assert all(e["taskId"] == task_id for e in result.events)
    assert snap["status"] == "COMPLETED"


async def test_post_sse_disconnect_cancels_only_with_cancel_on_disconnect() -> None:
    # shutdown_grace=0: the task left running is stopped at once when the block ends.
    with gateway(None, echo_token_delay_ms=20, shutdown_grace=0) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            ids = {}
            for flag in (True, False):
                r = await read_sse(
                    client,
                    "/api/tasks",
                    method="POST",
                    headers={"Accept": "text/event-stream"},
                    json={"query": echo_query(200), "agentType": 0, "cancelOnDisconnect": flag},
                    stop_after=5,
                )
                ids[flag] = r.headers["x-task-id"]
            with anyio.fail_after(20):
                while (await client.get(f"/api/tasks/{ids[True]}")).json()["status"] != "CANCELLED":
                    await asyncio.sleep(0.05)
            assert (await client.get(f"/api/tasks/{ids[False]}")).json()["status"] == "RUNNING"


def _http_calls_suspended_in(function: Any) -> int:
    """How many coroutines of ``function`` are suspended serving an HTTP request."""
    code = function.__code__
    gc.collect()  # finished ones may wait in a reference cycle
    return sum(
        1
        for o in gc.get_objects()
        if inspect.iscoroutine(o)
        and o.cr_code is code
        and o.cr_frame is not None
        and o.cr_frame.f_locals["scope"]["type"] == "http"  # not the lifespan's
    )


async def test_an_open_stream_holds_no_middleware_frame_and_still_gets_cors_headers() -> None:
    origin = "http://ui.example"
    settings = {"echo_token_delay_ms": 60_000, "cors_origins": (origin,), "shutdown_grace": 0}
    with gateway(None, **settings) as server:  # its task still runs at the end: stopped at once
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, "a b")
            url = f"/api/tasks/{task_id}/events"
            with anyio.fail_after(10):
                async with client.stream("GET", url, headers={"Origin": origin}) as response:
                    async for chunk in response.aiter_raw():
                        if b"retry:" in chunk:
                            break
                    # Pumped by StreamHost once the chain returned: no middleware stays suspended.
                    assert _http_calls_suspended_in(SecurityMiddleware.__call__) == 0
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin


async def test_the_disconnect_watch_steps_receive_as_a_task_would() -> None:
    """Through bare yields and futures; the body is read past; an error ends the watch too."""
    gone = asyncio.Event()
    messages = iter([{"type": "http.request", "body": b"", "more_body": False}])
    ends: list[BaseException | None] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0)
        for message in messages:
            return message
        await gone.wait()
        return {"type": "http.disconnect"}

    loop = asyncio.get_running_loop()
    ended = asyncio.Event()

    def on_end(error: BaseException | None) -> None:
        ends.append(error)
        ended.set()

    watch = DisconnectWatch(loop, receive, on_end)
    for _ in range(5):
        await asyncio.sleep(0)  # let it read the body and park on the event
    assert ends == []
    gone.set()
    with anyio.fail_after(5):
        await ended.wait()
    assert ends == [None] and watch.error is None

    async def failing() -> dict[str, Any]:
        await asyncio.sleep(0)
        raise RuntimeError("receive broke")

    ended.clear()
    watch = DisconnectWatch(loop, failing, on_end)
    with anyio.fail_after(5):
        await ended.wait()
    assert isinstance(ends[-1], RuntimeError) and watch.error is ends[-1]


async def test_a_joyagent_stream_is_served_off_the_chain_and_a_stuck_reader_is_cut_off() -> None:
    # The compat endpoints stream through the same host and send limit as the native ones.
    registry = flooding(600)  # ~10 MB of frames: far more than the socket buffers hold
    body = b'{"requestId": "stuck-1", "query": "flood", "agentType": 7}'
    with gateway(None, registry=registry, send_timeout=1.0) as server:
        stuck = socket.create_connection(("127.0.0.1", server.port))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(
            b"POST /AutoAgent HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await asyncio.to_thread(stuck.recv, 1024)
            task_id = head.split(b"x-task-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
            assert _http_calls_suspended_in(SecurityMiddleware.__call__) == 0
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                with anyio.fail_after(60):
                    await completed(client, task_id)  # the task never waits for its reader
                    await a_slow_client_was_cut(client)  # the stuck reader, at the send limit
        finally:
            stuck.close()


async def read_lagging(
    port: int, task_id: str, started: asyncio.Event, lag: Awaitable[object]
) -> bytes:
    """The raw SSE response of ``task_id``'s events, read by a client that stops reading once
    the ``start`` frame is in, sets ``started``, waits for ``lag`` (the task ends meanwhile,
    say), then reads the rest."""
    reader = socket.create_connection(("127.0.0.1", port))
    reader.sendall(f"GET /api/tasks/{task_id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        raw = b""
        while b'"start"' not in raw:
            raw += await asyncio.to_thread(reader.recv, 65536)
        started.set()
        await lag

        def read_rest() -> bytes:
            data = b""
            while not data.endswith(b"0\r\n\r\n"):
                chunk = reader.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
            return data

        return raw + await asyncio.to_thread(read_rest)
    finally:
        reader.close()


def _sse_ids(raw: bytes) -> list[int]:
    """The ``id:`` values of a chunked SSE body, in order."""
    body, rest = b"", raw.split(b"\r\n\r\n", 1)[1]
    while rest:
        size, rest = rest.split(b"\r\n", 1)
        n = int(size, 16)
        if n == 0:
            break
        body, rest = body + rest[:n], rest[n + 2 :]
    return [int(line[4:]) for line in body.split(b"\n") if line.startswith(b"id: ")]


async def test_a_live_reader_that_falls_behind_and_catches_up_misses_nothing(
    store_url: str | None,
) -> None:
    # A caught-up stream is written by the appender itself; when the client's buffer fills, the
    # frame being written waits in the stream's own task (the task is never held up), and the
    # stream goes on from there once the client reads again: every frame once, in order.
    started = asyncio.Event()
    # the reader is caught up (parked) before the burst of ~24 MB
    registry = flooding(1500, first=("start", started))
    with gateway(store_url, registry=registry, send_timeout=30.0) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            task_id = await submit(client, "burst", agent_type=7)
            with anyio.fail_after(60):
                raw = await read_lagging(server.port, task_id, started, completed(client, task_id))
    assert _sse_ids(raw) == list(range(1, 1504))


@pytest.mark.parametrize("live", [True, False], ids=["pushed", "replayed"])
async def test_the_retry_line_rides_on_the_first_chunk_and_the_finish_on_the_last(
    live: bool,
) -> None:
    """No socket write of its own for either: the ``retry`` line goes out with the first frame,
    and the finish frame in the same ``send`` as the end of the response."""
    store = MemoryStore(result_ttl=60)
    task_id = await running(store)
    if not live:  # the whole log is there before the reader comes: replayed, not pushed
        for text in ("a", "b"):
            await store.append(task_id, body(text))
        await store.finish(task_id, TaskStatus.COMPLETED, {"messageType": "result"})
    sent: list[Message] = []
    gone = asyncio.Event()

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    settings = StreamSettings(sse_retry_ms=1234, heartbeat_interval=30.0)
    stream = LogStream(store, task_id, 0, settings, GatewayMetrics())
    serving = asyncio.create_task(stream({"type": "http"}, receive, send))
    if live:
        for _ in range(5):
            await asyncio.sleep(0)  # parked on the log: the appends below push the frames
        for text in ("a", "b"):
            await store.append(task_id, body(text))
        await store.finish(task_id, TaskStatus.COMPLETED, {"messageType": "result"})
    with anyio.fail_after(5):
        await serving
    gone.set()
    frames = [m.frame for m in await store.read(task_id, 0, 10)]
    bodies = [(m["body"], m["more_body"]) for m in sent[1:]]
    assert sent[0]["type"] == "http.response.start"
    if live:
        assert bodies == [
            (b"retry: 1234\n\n" + frames[0], True),
            (frames[1], True),
            (frames[2], False),
        ]
    else:
        assert bodies == [(b"retry: 1234\n\n" + b"".join(frames), False)]
    assert stream.finished
