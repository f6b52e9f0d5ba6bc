"""A bounded soak: 200 concurrent tasks, random disconnects and cancels, one replica killed.

Ends with an audit: every task terminal, every client's sequence equal to the log, nothing
left running or queued, and the survivor's file descriptors and memory within bounds.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from typing import Any

import anyio
import httpx
import pytest

from gateway.protocol import new_task_id
from tests.gateway.stores import replay_problems, stored_log
from tests.gateway.support import read_sse
from tests.gateway.test_faults import FAST_LEASES, replica

pytestmark = pytest.mark.slow

TASKS = 200


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _client(
    urls: list[str], index: int, rng: random.Random, alive: dict[str, bool]
) -> dict[str, Any]:
    """Submit one task, read it with random drops (and maybe cancel it), resuming each time."""
    words = rng.randint(10, 40)
    query = " ".join(f"t{index}w{i}" for i in range(words))
    got: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30) as client:
        task_id = None
        for attempt in range(50):
            base = urls[(index + attempt) % len(urls)]
            if not alive[base]:
                continue
            try:
                if task_id is None:
                    r = await client.post(
                        f"{base}/api/tasks", json={"query": query, "agentType": 0}
                    )
                    task_id = r.json()["taskId"]
                if rng.random() < 0.1 and got:
                    await client.post(f"{base}/api/tasks/{task_id}/cancel")
                headers = {"Last-Event-ID": str(got[-1]["seq"])} if got else {}
                drop = rng.randint(3, 30) if rng.random() < 0.5 else None
                result = await read_sse(
                    client, f"{base}/api/tasks/{task_id}/events", headers=headers, stop_after=drop
                )
            except (httpx.HTTPError, KeyError):
                await asyncio.sleep(0.1)
                continue
            got += result.events
            if result.status == 204 or (got and got[-1]["finish"]):
                break
    return {"task_id": task_id, "events": got}


def test_soak_of_concurrent_tasks_with_drops_cancels_and_a_replica_kill(redis_url: str) -> None:
    env = {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": new_task_id(),
        "ECHO_TOKEN_DELAY_MS": "15",
        "MAX_RUNNING": "64",
        "TASK_RETRY": "1",
        "LOG_LEVEL": "warning",
        **FAST_LEASES,
    }
    rng = random.Random(1234)
    with replica(env) as (url_a, proc_a), replica(env) as (url_b, proc_b):
        urls = [url_a, url_b]
        alive = {url_a: True, url_b: True}
        fds_before, rss_before = _fds(proc_b.pid), _rss_kb(proc_b.pid)

        async def run() -> list[dict[str, Any]]:
            async def killer() -> None:
                await asyncio.sleep(2.0)
                alive[url_a] = False
                proc_a.send_signal(signal.SIGKILL)

            with anyio.fail_after(120):
                kill = asyncio.create_task(killer())
                results = await asyncio.gather(
                    *(_client(urls, i, random.Random(rng.random()), alive) for i in range(TASKS))
                )
                await kill
                return list(results)

        results = anyio.run(run)
        proc_a.wait(10)
        # The audit, against the survivor.
        for result in results:
            task_id = result["task_id"]
            assert task_id is not None
            snap = httpx.get(f"{url_b}/api/tasks/{task_id}").json()
            assert snap["status"] in {"COMPLETED", "FAILED", "CANCELLED"}, snap
            stored = stored_log(redis_url, env["REDIS_PREFIX"], task_id)
            assert len(stored) == snap["lastSeq"]
            assert replay_problems(result["events"], stored) == []
        metrics = httpx.get(f"{url_b}/metrics").text
        assert 'agw_tasks{status="RUNNING"} 0.0' in metrics
        assert 'agw_tasks{status="PENDING"} 0.0' in metrics
        assert "agw_active_streams 0.0" in metrics
        # The Redis pool keeps (idle) at most one connection per task followed at once; beyond
        # that and a few sockets, a descriptor would be a leak.
        deadline = time.monotonic() + 10
        while _fds(proc_b.pid) > fds_before + TASKS + 50:
            assert time.monotonic() < deadline, (fds_before, _fds(proc_b.pid))
            time.sleep(0.2)
        assert _rss_kb(proc_b.pid) - rss_before < 150_000
