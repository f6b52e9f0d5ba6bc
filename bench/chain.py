"""The relay's per-token Python chain in one process, without sockets: µs of CPU per token.

Bench a's CPU per token moves by a quarter with the VM's mood, and half of it is the kernel's
(the frame's write, the upstream's read): a change that saves a few calls per token drowns in
that. This drives the real objects of the hot path from the upstream chunk to the pushed frame
— the wire client's connection (``WireConnection.data_received``: HTTP chunk parsing), the chat
sink (SSE, JSON, the assembler), the relay's ``on_text`` and the ``Printer``, the store's
``append_now`` and its log, one SSE reader (a ``LogStream`` parked on the log, its ``send``
framing HTTP chunks as uvicorn does) — with transports that only count writes. ``streams``
tasks get their tokens in turn, so the working set is a busy gateway's, not one hot task's;
the loop turns every ``--turn`` tokens, and with ``--redis`` the store's flusher writes to a
real ``redis-server`` in those turns at the gateway's flush spacing, and the reader gets each
frame once its flush is acknowledged (its Python and its socket calls are counted: per flush,
not per token).

    python -m bench.chain                      # memory store
    python -m bench.chain --redis              # Redis store (own redis-server, or REDIS_URL)
    python -m bench.chain --streams 500 --tokens 200 --runs 5

Compare two trees by running it from each (``cd <tree> && python -m bench.chain``), in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import uuid
from collections.abc import MutableMapping, Sequence
from typing import Any

import uvloop

from bench.procs import redis_server
from bench.upstream import HEAD, PREFIX, SUFFIX, chunk
from gateway.metrics import GatewayMetrics
from gateway.printer import Printer
from gateway.protocol import TaskRecord, new_task_id, now_ms
from gateway.routes.sse import LogStream, StreamSettings
from gateway.settings import Settings
from gateway.store import MemoryStore, RedisStore, StreamStore
from gateway.upstream import Deadline, WireConnection, WirePool
from gateway.upstream.openai import TextSink


class _Transport(asyncio.Transport):
    """Takes writes and counts them, and the SSE frames (``data:`` lines) in them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.frames = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        self.frames += bytes(data).count(b"\ndata: ")

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


#: A reader that never times out, pings or ends within a run.
_SETTINGS = StreamSettings(heartbeat_interval=3600, sse_max_age=36000, send_timeout=3600)
_METRICS = GatewayMetrics()


class _Relay:
    """One relayed stream: its upstream connection, piped into the relay's ``on_text``."""

    def __init__(self, store: StreamStore, task_id: str, pool: WirePool) -> None:
        self.store = store
        self.task_id = task_id
        self.upstream = _Transport()
        self.client = _Transport()
        self.conn = WireConnection(pool, ("http", "127.0.0.1", 80))
        self.conn.connection_made(self.upstream)
        printer = Printer(store, task_id, "req-" + task_id[:8])
        delta_now = printer.text_delta_now
        message_id = uuid.uuid4().hex
        parts: list[str] = []

        def on_text(text: str) -> None:  # the relay agent's, minus its slow path
            parts.append(text)
            if delta_now(message_id, text) is None:
                raise RuntimeError("the store could not append without waiting")

        self.on_text = on_text
        self.pipe: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[None] | None = None

    async def send(self, message: MutableMapping[str, Any]) -> None:
        """The reader's ASGI ``send``: a body as its HTTP chunk, as uvicorn writes it."""
        body = message.get("body", b"")
        if isinstance(body, bytes) and body:
            self.client.write(b"%x\r\n%s\r\n" % (len(body), body))

    async def receive(self) -> dict[str, object]:
        """The client never leaves: the reader is cancelled at the end."""
        await asyncio.get_running_loop().create_future()
        return {"type": "http.disconnect"}

    async def start(self) -> None:
        """The request, the response's head, the body piped to the sink; a reader parked."""
        sending = asyncio.ensure_future(
            self.conn.send(b"POST /v1/chat/completions HTTP/1.1\r\n\r\n", Deadline(3600, "LLM"))
        )
        await asyncio.sleep(0)
        self.conn.data_received(HEAD)
        response = await sending
        self.pipe = asyncio.ensure_future(response.pipe(TextSink(self.on_text)))
        await asyncio.sleep(0)
        self.conn.data_received(chunk(PREFIX + b"first" + SUFFIX))  # the writer exists now
        for _ in range(1000):  # with Redis, once the first message's flush is acknowledged
            await asyncio.sleep(0.005)
            if self.store.live_log(self.task_id, 1) is not None:
                break
        else:
            raise RuntimeError("no live log to read")
        reader = LogStream(self.store, self.task_id, 1, _SETTINGS, _METRICS)
        self.reader = asyncio.ensure_future(reader({"type": "http"}, self.receive, self.send))

    def stop(self) -> None:
        for task in (self.pipe, self.reader):
            if task is not None:
                task.cancel()


async def _task(store: StreamStore) -> str:
    record = TaskRecord(
        task_id=new_task_id(), request_id="r", agent_type=1, query="q", created_at=now_ms()
    )
    created, _ = await store.create(record)
    if await store.claim(created.task_id, "bench", 600_000) is None:
        raise RuntimeError("claim refused")
    return created.task_id


async def measure(store: StreamStore, streams: int, tokens: int, turn: int) -> float:
    """µs of CPU per token over ``streams`` times ``tokens`` tokens."""
    pool = WirePool(connect_timeout=5, idle_timeout=3600)
    relays = [_Relay(store, await _task(store), pool) for _ in range(streams)]
    for relay in relays:
        await relay.start()
    await asyncio.sleep(0)  # the last reader parks
    chunks = [chunk(PREFIX + b"tok%d " % i + SUFFIX) for i in range(tokens)]
    frames = [r.client.frames for r in relays]
    gc.collect()
    gc.disable()  # a collector pass lands in some runs and not others: measured apart (bench a)
    started = time.process_time()
    n = 0
    for data in chunks:
        for relay in relays:
            relay.conn.data_received(data)
            n += 1
            if n % turn == 0:
                await asyncio.sleep(0)
    expected = [f + tokens for f in frames]
    for _ in range(1000):  # the last flush (readers get frames once Redis has them)
        await asyncio.sleep(0.005)
        if [r.client.frames for r in relays] == expected:
            break
    spent = time.process_time() - started
    gc.enable()
    if [r.client.frames - f for r, f in zip(relays, frames, strict=True)] != [tokens] * streams:
        raise RuntimeError("a reader was not handed every frame")
    for relay in relays:
        relay.stop()
    await asyncio.sleep(0)
    return spent * 1e6 / n


def _store(url: str | None) -> StreamStore:
    if url is None:
        return MemoryStore()
    settings = Settings.from_env()  # the gateway's flush timing
    return RedisStore(
        url,
        result_ttl=60,
        prefix="chain-" + new_task_id()[:8],
        flush_interval=settings.flush_interval_ms / 1000,
        flush_spacing=settings.flush_spacing_ms / 1000,
    )


async def run(args: argparse.Namespace, url: str | None) -> list[float]:
    """Each run on a store of its own (tasks never end here: they would pile up)."""
    results = []
    for i in range(args.runs + 1):
        store = _store(url)
        await store.start()
        try:
            if i == 0:
                await measure(store, min(args.streams, 20), 50, args.turn)  # warm up
            else:
                results.append(await measure(store, args.streams, args.tokens, args.turn))
        finally:
            await store.close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chain", description=__doc__)
    parser.add_argument("--streams", type=int, default=200, help="tasks fed in turn")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per task")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--turn", type=int, default=25, help="tokens between loop turns")
    parser.add_argument("--redis", action="store_true", help="the Redis store")
    args = parser.parse_args(argv)
    if args.redis:
        with redis_server() as (url, _):
            results = uvloop.run(run(args, url))
    else:
        results = uvloop.run(run(args, None))
    store = "redis" if args.redis else "memory"
    print(
        f"{store}: median {statistics.median(results):.2f}, best {min(results):.2f} µs CPU/token "
        f"over {[round(r, 2) for r in results]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
