"""``agent-gateway serve gateway --workers N``: real processes on one port, real Redis.

Which worker serves a connection is read from the kernel: the server end of the client's TCP
connection (``/proc/net/tcp``) is a socket that one worker's file descriptors point at.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import orjson
import pytest

from gateway.protocol import new_task_id
from gateway.upstream.sse import SSEDecoder
from tests.gateway.support import echo_query, merged
from tests.helpers import free_port, stop_process, wait_http_ok

SERVE = [sys.executable, "-m", "gateway.cli", "serve", "gateway"]


@dataclass
class Workers:
    proc: subprocess.Popen[bytes]
    port: int
    count: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> set[int]:
        """The parent's children that run a worker (not multiprocessing's resource tracker);
        one worker is the process itself."""
        pid = self.proc.pid
        if self.count == 1:
            return {pid}
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(child) for child in f.read().split()]
        return {child for child in children if b"spawn_main" in _cmdline(child)}


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def serving_pid(server_port: int, client_port: int, pids: set[int]) -> int | None:
    """The pid among ``pids`` that holds the server end of the connection from
    ``client_port`` to ``server_port`` on 127.0.0.1."""
    owners: dict[int, int] = {}
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    owners[int(link[8:-1])] = pid
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = (int(addr.split(":")[1], 16) for addr in fields[1:3])
            if (local, remote) == (server_port, client_port):
                return owners.get(int(fields[9]))
    return None


@contextlib.contextmanager
def workers(env: dict[str, str], count: int = 2) -> Iterator[Workers]:
    """``agent-gateway serve gateway --workers count``, with every worker up; stopped (and any
    process of it left killed) at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [*SERVE, "--port", str(port), "--workers", str(count), "--log-level", "warning"],
        env={**os.environ, **env, "HOST": "127.0.0.1"},
    )
    started = Workers(proc, port, count)
    pids: set[int] = set()
    try:
        wait_http_ok(started.url + "/healthz", timeout=90, proc=proc)  # N imports on a busy VM
        deadline = time.monotonic() + 30
        while len(pids := started.worker_pids()) < count:
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.05)
        yield started
    finally:
        if proc.poll() is None:
            stop_process(proc)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Stream:
    """What one SSE connection read, and which worker served it."""

    events: list[dict[str, object]]
    pid: int | None
    ended_cleanly: bool


async def read_stream(
    gw: Workers,
    request: httpx.Request,
    *,
    stop_after: int | None = None,
    only_pid: int | None = None,
    on_events: object = None,
) -> Stream | None:
    """Send ``request`` on a new connection and read its SSE events; ``None`` when it was not
    served by ``only_pid``. ``stop_after`` events, the connection is dropped."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.send(request, stream=True)
        try:
            client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
            pid = serving_pid(gw.port, client_port, gw.worker_pids())
            if only_pid is not None and pid != only_pid:
                return None
            events: list[dict[str, object]] = []
            decoder = SSEDecoder()
            async for chunk in response.aiter_raw():
                events += [orjson.loads(event.data) for event in decoder.feed(chunk)]
                if callable(on_events):
                    on_events(events)
                if stop_after is not None and len(events) >= stop_after:
                    return Stream(events, pid, ended_cleanly=False)
            return Stream(events, pid, ended_cleanly=True)
        finally:
            await response.aclose()


def post_sse(gw: Workers, query: str) -> httpx.Request:
    """Submit an echo task and stream it (POST-SSE)."""
    body = {"query": query, "agentType": 0}
    headers = {"Accept": "text/event-stream"}
    return httpx.Request("POST", f"{gw.url}/api/tasks", json=body, headers=headers)


def attach(gw: Workers, task_id: str, after: int) -> httpx.Request:
    """Read a task's stream after seq ``after``."""
    headers = {"Last-Event-ID": str(after)}
    return httpx.Request("GET", f"{gw.url}/api/tasks/{task_id}/events", headers=headers)


def assert_whole(events: list[dict[str, Any]], query: str) -> None:
    # In order, once each, to the end; a resume's replay leaves out the deltas of a message
    # whose final frame is written (DESIGN §5), so the answer is checked merged.
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)) and seqs[0] == 1
    assert events[-1]["finish"] is True and events[-1]["result"] == query
    answers = [v for kind, v in merged(events).values() if kind == "agent_stream"]
    assert answers[-1] == query  # (a handed-over task's first run left a partial one before)


@pytest.fixture(scope="module")
def two_workers_env(redis_url: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "REDIS_PREFIX": new_task_id(), "ECHO_TOKEN_DELAY_MS": "5"}


@pytest.fixture(scope="module")
def two_workers(two_workers_env: dict[str, str]) -> Iterator[Workers]:
    with workers(two_workers_env) as gw:
        yield gw


def serve_two_until_exit(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """``serve gateway --workers 2`` with ``env`` alone, expected to exit by itself."""
    return subprocess.run(
        [*SERVE, "--port", str(free_port()), "--workers", "2"],
        env=env,
        capture_output=True,
        timeout=120,
    )


def test_with_the_memory_store_several_workers_are_refused_with_status_2() -> None:
    done = serve_two_until_exit({k: v for k, v in os.environ.items() if k != "REDIS_URL"})
    assert done.returncode == 2
    assert b"--workers 2 needs REDIS_URL" in done.stderr


STREAMS = 24
"""Connections of a test: the kernel spreads them over the workers by a hash of their ports,
so all of them land on one of two workers once in 2**23 runs."""


def test_both_workers_serve_streams_on_the_one_port(two_workers: Workers) -> None:
    queries = [echo_query(20 + i) for i in range(STREAMS)]

    async def run_all() -> list[Stream | None]:
        with anyio.fail_after(60):
            return await asyncio.gather(
                *(read_stream(two_workers, post_sse(two_workers, query)) for query in queries)
            )

    streams = asyncio.run(run_all())
    for stream, query in zip(streams, queries, strict=True):
        assert stream is not None and stream.ended_cleanly
        assert_whole(stream.events, query)
    assert {stream.pid for stream in streams if stream} == two_workers.worker_pids()


def test_a_stream_resumes_exactly_on_the_other_worker(two_workers: Workers) -> None:
    query = echo_query(400)

    async def run() -> list[dict[str, object]]:
        with anyio.fail_after(60):
            first = await read_stream(two_workers, post_sse(two_workers, query), stop_after=10)
            assert first is not None and first.pid is not None
            task_id = str(first.events[0]["taskId"])
            after = int(first.events[-1]["seq"])  # type: ignore[call-overload]
            (other,) = two_workers.worker_pids() - {first.pid}
            for _ in range(100):  # new connections until the other worker takes one
                rest = await read_stream(
                    two_workers, attach(two_workers, task_id, after), only_pid=other
                )
                if rest is not None:
                    assert rest.ended_cleanly
                    return first.events + rest.events
            raise AssertionError("the other worker took none of 100 connections")

    assert_whole(asyncio.run(run()), query)


@pytest.mark.slow
def test_sigterm_to_the_parent_drains_every_worker_and_leaves_no_process(redis_url: str) -> None:
    env = {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": new_task_id(),
        "ECHO_TOKEN_DELAY_MS": "30",
        "SHUTDOWN_GRACE": "0.2",
        "MAX_RUNNING": "24",  # every task runs where it was posted (none waits in the queue)
        "LEASE_TTL": "2",
        "LEASE_RENEW_INTERVAL": "0.2",
        "SWEEP_INTERVAL": "0.2",
    }
    query = echo_query(300)  # 9 s of tokens: running when the signal comes
    with workers(env) as gw:
        pids = gw.worker_pids()
        reading: dict[int, int] = {}

        async def read_until_stopped() -> list[Stream | None]:
            signalled = False

            def maybe_stop(_: list[dict[str, object]]) -> None:
                nonlocal signalled
                if not signalled and len(reading) == STREAMS and min(reading.values()) >= 5:
                    gw.proc.send_signal(signal.SIGTERM)
                    signalled = True

            async def one(i: int) -> Stream | None:
                def seen(events: list[dict[str, object]]) -> None:
                    reading[i] = len(events)
                    maybe_stop(events)

                return await read_stream(gw, post_sse(gw, query), on_events=seen)

            with anyio.fail_after(60):
                return await asyncio.gather(*(one(i) for i in range(STREAMS)))

        streams = [s for s in asyncio.run(read_until_stopped()) if s is not None]
        assert gw.proc.wait(60) == 0
        assert not any(_alive(pid) for pid in pids)
    assert {s.pid for s in streams} == pids  # both had streams open
    for stream in streams:  # each ended as a response ends, before the task did
        assert stream.ended_cleanly and not stream.events[-1]["finish"]
    # The tasks were handed over: a gateway started later runs them to the end (writing fast:
    # the rerun's pace is not what is tested).
    with workers({**env, "ECHO_TOKEN_DELAY_MS": "5"}, count=1) as later:
        for stream in streams:
            task_id = str(stream.events[0]["taskId"])
            after = int(stream.events[-1]["seq"])  # type: ignore[call-overload]
            rest = asyncio.run(read_stream(later, attach(later, task_id, after)))
            assert rest is not None
            events = stream.events + rest.events
            assert_whole(events, query)
            handed = [
                e for e in events if e["messageType"] == "status" and e["status"] == "PENDING"
            ]
            assert [e["reason"] for e in handed] == ["handover"]


@pytest.mark.slow
def test_a_dead_worker_is_replaced_and_workers_outlive_no_parent(
    two_workers_env: dict[str, str],
) -> None:
    with workers(two_workers_env) as gw:
        first = gw.worker_pids()
        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while len(now := gw.worker_pids()) < 2 or killed in now:
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.05)
        wait_http_ok(gw.url + "/readyz", timeout=90)
        gw.proc.kill()  # the parent dies without a word: its workers stop by themselves
        gw.proc.wait(10)
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in now):
            assert time.monotonic() < deadline, "workers outlived their parent"
            time.sleep(0.05)


def test_workers_that_cannot_start_stop_the_parent_with_status_1(redis_url: str) -> None:
    done = serve_two_until_exit(
        {**os.environ, "REDIS_URL": redis_url, "A2A_AGENT_TYPE": "not a number"}
    )
    assert done.returncode == 1
    assert b"A2A_AGENT_TYPE must be a number" in done.stderr
    assert b"failed to start: stopping" in done.stderr
