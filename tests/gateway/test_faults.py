"""Injected faults, for real: a killed replica, a stopped replica, a restarted Redis."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import anyio
import httpx
import orjson
import pytest

from gateway.protocol import new_task_id
from gateway.upstream.sse import SSEDecoder
from tests.gateway.stores import replay_problems, stored_log
from tests.gateway.support import echo_query, gateway, read_sse
from tests.helpers import free_port, wait_http_ok, wait_redis

pytestmark = pytest.mark.slow  # real processes killed and restarted

# A killed replica's tasks are found within 2 s; a live one renews every 0.2 s, so only a
# process stalled for 1.8 s (not one merely slowed by a busy machine) loses its lease.
FAST_LEASES = {
    "LEASE_TTL": "2",
    "LEASE_RENEW_INTERVAL": "0.2",
    "SWEEP_INTERVAL": "0.2",
}


@contextlib.contextmanager
def replica(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """One gateway process (``agent-gateway serve gateway``); killed at the end if still alive."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "gateway", "--port", str(port)],
        env={**os.environ, **env, "HOST": "127.0.0.1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(url + "/healthz", proc=proc)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def events_until_end(url: str, task_id: str, after: int = 0) -> list[dict[str, object]]:
    """Read the task's log from ``url`` after ``after`` to its finish message (bounded)."""

    async def read() -> list[dict[str, object]]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            with anyio.fail_after(30):
                headers = {"Last-Event-ID": str(after)}
                return (
                    await read_sse(client, f"/api/tasks/{task_id}/events", headers=headers)
                ).events

    return anyio.run(read)


def wait_running(url: str, task_id: str, min_seq: int) -> None:
    deadline = time.monotonic() + 20
    while httpx.get(f"{url}/api/tasks/{task_id}").json()["lastSeq"] < min_seq:
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.05)


@pytest.mark.parametrize("retry", [0, 1])
def test_a_replica_killed_mid_task_leaves_the_survivor_to_end_or_rerun_it(
    redis_url: str, retry: int
) -> None:
    env = {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": new_task_id(),
        "TASK_RETRY": str(retry),
        **FAST_LEASES,
    }
    words = 300
    # A writes slowly, so its task is still running however long B takes to start (on a busy
    # machine too); B, which reruns it with TASK_RETRY, writes fast.
    with replica({**env, "ECHO_TOKEN_DELAY_MS": "100"}) as (url_a, proc_a):
        task_id = httpx.post(
            f"{url_a}/api/tasks", json={"query": echo_query(words), "agentType": 0}
        ).json()["taskId"]
        wait_running(url_a, task_id, 10)
        with replica({**env, "ECHO_TOKEN_DELAY_MS": "5"}) as (url_b, _):
            proc_a.send_signal(signal.SIGKILL)
            proc_a.wait(10)
            events = events_until_end(url_b, task_id)
            snap = httpx.get(f"{url_b}/api/tasks/{task_id}").json()
    # All of the log, in order (the replay leaves out deltas whose final frame was written).
    assert replay_problems(events, stored_log(redis_url, env["REDIS_PREFIX"], task_id)) == []
    assert events[-1]["finish"] is True and sum(bool(e["finish"]) for e in events) == 1
    if retry == 0:
        assert events[-1]["messageType"] == "error"
        assert events[-1]["error"] == {"code": "interrupted", "message": snap["error"]["message"]}
        assert snap["status"] == "FAILED"
    else:
        requeued = [e for e in events if e["messageType"] == "status" and e["status"] == "PENDING"]
        assert len(requeued) == 1 and requeued[0]["reason"] == "retry"
        assert events[-1]["messageType"] == "result" and events[-1]["result"] == echo_query(words)
        assert snap["status"] == "COMPLETED"


def test_sigterm_ends_streams_cleanly_and_hands_running_tasks_over(redis_url: str) -> None:
    env = {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": new_task_id(),
        "SHUTDOWN_GRACE": "0.2",
        **FAST_LEASES,
    }
    words = 300
    # As above: A is still writing when B is up and the stream is cut; B's rerun is quick.
    with replica({**env, "ECHO_TOKEN_DELAY_MS": "100"}) as (url_a, proc_a):
        task_id = httpx.post(
            f"{url_a}/api/tasks", json={"query": echo_query(words), "agentType": 0}
        ).json()["taskId"]
        wait_running(url_a, task_id, 5)
        with replica({**env, "ECHO_TOKEN_DELAY_MS": "5"}) as (url_b, _):

            async def read_then_stop() -> list[dict[str, object]]:
                got: list[dict[str, object]] = []
                decoder = SSEDecoder()
                async with httpx.AsyncClient(base_url=url_a, timeout=30) as client:
                    with anyio.fail_after(30):
                        async with client.stream("GET", f"/api/tasks/{task_id}/events") as r:
                            async for chunk in r.aiter_raw():  # ends cleanly, or raises
                                got += [orjson.loads(e.data) for e in decoder.feed(chunk)]
                                if len(got) >= 10 and proc_a.returncode is None:
                                    proc_a.send_signal(signal.SIGTERM)
                                    proc_a.returncode = -1  # sent once
                return got

            first = anyio.run(read_then_stop)
            proc_a.returncode = None
            # uvicorn re-raises the signal once its graceful shutdown is complete
            assert proc_a.wait(20) in (0, -signal.SIGTERM)
            rest = events_until_end(url_b, task_id, after=int(first[-1]["seq"]))  # type: ignore[arg-type]
            snap = httpx.get(f"{url_b}/api/tasks/{task_id}").json()
    events = first + rest
    assert replay_problems(events, stored_log(redis_url, env["REDIS_PREFIX"], task_id)) == []
    assert not first[-1]["finish"]
    handed = [e for e in events if e["messageType"] == "status" and e["status"] == "PENDING"]
    assert len(handed) == 1 and handed[0]["reason"] == "handover"
    assert events[-1]["messageType"] == "result" and snap["status"] == "COMPLETED"


@contextlib.contextmanager
def durable_redis() -> Iterator[tuple[str, object]]:
    """A redis-server with an fsync-always AOF, restartable on the same port and folder."""
    port = free_port()
    folder = tempfile.mkdtemp(prefix="agw-aof-")
    args = [
        shutil.which("redis-server") or "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        folder,
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL))
        wait_redis(port, procs[-1])

    def stop() -> None:
        procs[-1].terminate()
        procs[-1].wait(10)

    start()
    try:
        yield f"redis://127.0.0.1:{port}/0", (start, stop)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_redis_restart_mid_stream_loses_and_duplicates_nothing() -> None:
    words = 120
    with durable_redis() as (url, (start, stop)):  # type: ignore[misc]
        prefix = new_task_id()
        with (
            gateway(url, echo_token_delay_ms=15, redis_prefix=prefix) as a,
            gateway(url, redis_prefix=prefix, max_running=1) as b,
        ):
            task_id = httpx.post(
                f"{a.url}/api/tasks", json={"query": echo_query(words), "agentType": 0}
            ).json()["taskId"]
            wait_running(a.url, task_id, 15)
            stop()
            ready = httpx.get(f"{a.url}/readyz")
            time.sleep(0.5)  # the agent keeps writing into the buffer meanwhile
            start()
            events = events_until_end(b.url, task_id)
            ready_again = httpx.get(f"{a.url}/readyz")
            stored = stored_log(url, prefix, task_id)
    assert ready.status_code == 503 and ready_again.status_code == 200
    assert replay_problems(events, stored) == []
    assert events[-1]["seq"] == words + 7
    assert events[-1]["result"] == echo_query(words)
