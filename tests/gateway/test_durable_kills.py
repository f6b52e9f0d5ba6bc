"""Gateways SIGKILLed at many points of their streams, readers attached (property-style).

Each round starts two gateways (``A``) beside a survivor (``B``, same Redis). Each ``A`` runs
echo tasks with three readers each — an SSE stream on ``A`` that resumes on ``B`` with
``Last-Event-ID``, a polling reader (``?after=``) on ``A`` that moves to ``B``, and an SSE
stream on ``B`` (a replica that tails Redis) — and is killed right after a reader got a random
seq. ``B``'s sweeper then ends each task (``error/interrupted``) or reruns it (``TASK_RETRY``).

The properties (DESIGN §3, durable before visible): every reader ends on the task's terminal
message within a bound, and what each saw — seq → message — is the log as finally stored: no
seq seen with other content, no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import orjson
import pytest

from gateway.protocol import new_task_id
from gateway.upstream.sse import SSEDecoder
from tests.gateway.stores import replay_problems, stored_log
from tests.gateway.test_faults import FAST_LEASES, replica
from tests.helpers import free_port, wait_http_ok

pytestmark = pytest.mark.slow

#: Seconds a reader may take beyond its task's own run to reach the terminal message (a lease
#: of 2 s, a sweep every 0.2 s, and with ``TASK_RETRY`` the rerun's start).
END_WITHIN = 12.0
GATEWAYS_PER_ROUND = 2
TASKS_PER_GATEWAY = 2

CASES: dict[str, dict[str, Any]] = {
    # The reproduction: a flush every 300 ms, a token every 50 ms.
    "wide flush window": {
        "env": {"FLUSH_INTERVAL_MS": "300", "ECHO_TOKEN_DELAY_MS": "50", "TASK_RETRY": "0"},
        "rounds": 6,
        "words": 60,
        "token_s": 0.05,
        "kill_at": (3, 45),
    },
    # The default flush settings, and the retry path: B reruns each task after the kill.
    "default flush, retried": {
        "env": {"ECHO_TOKEN_DELAY_MS": "10", "TASK_RETRY": "1"},
        "rounds": 6,
        "words": 120,
        "token_s": 0.01,
        "kill_at": (3, 100),
    },
}


class Reader:
    """What one reader saw, in order, and how it ended."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: dict[int, dict[str, Any]] = {}
        self.order: list[int] = []
        self.failure: str | None = None

    def take(self, message: dict[str, Any]) -> None:
        seq = int(message["seq"])
        self.order.append(seq)  # a gap or a duplicate shows in the order
        self.seen.setdefault(seq, message)

    @property
    def last(self) -> int:
        return self.order[-1] if self.order else 0

    @property
    def ended(self) -> bool:
        return bool(self.order) and bool(self.seen[self.last]["finish"])


async def read_sse(
    reader: Reader,
    bases: list[str],
    task_id: str,
    deadline: float,
    on_seq: Callable[[int], None] | None = None,
) -> None:
    """Read the task's SSE stream to its finish; after a drop, resume on the next base."""
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=None)) as client:
        while not reader.ended:
            if loop.time() > deadline:
                reader.failure = f"no finish in time (last seq {reader.last})"
                return
            headers = {"Last-Event-ID": str(reader.last)} if reader.order else {}
            url = f"{bases[0]}/api/tasks/{task_id}/events"
            try:
                with anyio.fail_after(max(0.1, deadline - loop.time())):
                    async with client.stream("GET", url, headers=headers) as response:
                        if response.status_code != 200:
                            reader.failure = f"{response.status_code} after seq {reader.last}"
                            return
                        decoder = SSEDecoder()
                        async for chunk in response.aiter_raw():
                            for event in decoder.feed(chunk):
                                reader.take(orjson.loads(event.data))
                                if on_seq is not None:
                                    on_seq(reader.last)
            except TimeoutError:
                continue  # reported by the deadline check
            except httpx.HTTPError:
                pass
            if not reader.ended and len(bases) > 1:
                bases.pop(0)  # the gateway went away: resume on the survivor


async def poll(reader: Reader, bases: list[str], task_id: str, deadline: float) -> None:
    """Poll ``?after=`` to the finish, moving to the next base when one stops answering."""
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(timeout=5) as client:
        while not reader.ended:
            if loop.time() > deadline:
                reader.failure = f"no finish in time (last seq {reader.last})"
                return
            params = {"after": reader.last, "limit": 1000}
            try:
                response = await client.get(f"{bases[0]}/api/tasks/{task_id}", params=params)
            except httpx.HTTPError:
                if len(bases) > 1:
                    bases.pop(0)
                continue
            if response.status_code != 200:
                reader.failure = f"{response.status_code} after seq {reader.last}"
                return
            messages = response.json()["messages"]
            for message in messages:
                reader.take(message)
            if not messages:
                await asyncio.sleep(0.02)  # the polling client's own pace


Started = list[tuple[str, "subprocess.Popen[bytes]"]]


def spawn(env: dict[str, str], count: int, spawned: Started) -> Started:
    """Start ``count`` gateway processes (not waiting for them); each is added to ``spawned``."""
    started: Started = []
    for _ in range(count):
        port = free_port()
        command = [sys.executable, "-m", "gateway.cli", "serve", "gateway", "--port", str(port)]
        proc = subprocess.Popen(command, env={**os.environ, **env, "HOST": "127.0.0.1"})
        started.append((f"http://127.0.0.1:{port}", proc))
    spawned += started
    return started


@contextlib.contextmanager
def reaping(spawned: Started) -> Iterator[Started]:
    """Kill whatever of ``spawned`` is still alive at the end of the block."""
    try:
        yield spawned
    finally:
        for _, proc in spawned:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


async def drive(
    url: str,
    proc: subprocess.Popen[bytes],
    survivor: str,
    spec: dict[str, Any],
    kill_at: int,
    rng: random.Random,
) -> list[tuple[str, list[Reader]]]:
    """Run tasks on the gateway at ``url``, kill it once its first task's SSE reader got seq
    ``kill_at``; return each task's readers once they ended (or failed)."""
    loop = asyncio.get_running_loop()
    words = spec["words"]

    def kill_after(seq: int) -> None:
        if seq >= kill_at and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)

    tasks: list[tuple[str, list[Reader]]] = []
    reading: list[asyncio.Task[None]] = []
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for index in range(TASKS_PER_GATEWAY):
                if index:  # the tasks stand at different points when the kill comes
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                query = " ".join(f"k{kill_at}t{index}w{i}" for i in range(words))
                try:
                    posted = await client.post(
                        f"{url}/api/tasks", json={"query": query, "agentType": 0}
                    )
                except httpx.HTTPError:
                    break  # killed already
                task_id = posted.json()["taskId"]
                readers = [Reader("SSE on A"), Reader("polling A"), Reader("SSE on B")]
                deadline = loop.time() + END_WITHIN + 2 * words * spec["token_s"]
                trigger = kill_after if index == 0 else None
                reading += [
                    asyncio.create_task(
                        read_sse(readers[0], [url, survivor], task_id, deadline, trigger)
                    ),
                    asyncio.create_task(poll(readers[1], [url, survivor], task_id, deadline)),
                    asyncio.create_task(read_sse(readers[2], [survivor], task_id, deadline)),
                ]
                tasks.append((task_id, readers))
        await asyncio.gather(*reading)
    finally:
        if proc.poll() is None:  # the tasks ended before the kill point
            os.kill(proc.pid, signal.SIGKILL)
        for task in reading:
            task.cancel()
    return tasks


async def one_round(
    started: Started,
    kill_points: list[int],
    survivor: str,
    spec: dict[str, Any],
    rng: random.Random,
) -> list[list[tuple[str, list[Reader]]]]:
    """Drive each started gateway to its kill point at once."""
    return list(
        await asyncio.gather(
            *(
                drive(url, proc, survivor, spec, kill_at, rng)
                for (url, proc), kill_at in zip(started, kill_points, strict=True)
            )
        )
    )


def audit(
    survivor: str, stored: list[dict[str, Any]], readers: list[Reader], where: str
) -> list[str]:
    """What differs between each reader's view and the task's log as stored."""
    body = httpx.get(f"{survivor}/api/tasks/{stored[0]['taskId']}").json() if stored else {}
    problems = []
    if body.get("status") not in {"COMPLETED", "FAILED"} or not stored[-1]["finish"]:
        problems.append(f"{where}: the task did not end ({body.get('status')})")
    for reader in readers:
        if reader.failure is not None:
            problems.append(f"{where}, {reader.name}: {reader.failure}")
            continue
        seen = [reader.seen[seq] for seq in reader.order]
        problems += [f"{where}, {reader.name}: {p}" for p in replay_problems(seen, stored)]
    return problems


@pytest.mark.parametrize("case", list(CASES))
def test_readers_of_a_gateway_killed_mid_stream_end_on_the_log_as_stored(
    redis_url: str, case: str
) -> None:
    spec = CASES[case]
    env = {"REDIS_URL": redis_url, "REDIS_PREFIX": new_task_id(), **FAST_LEASES, **spec["env"]}
    rng = random.Random(f"durable-{case}")
    problems: list[str] = []
    with replica(env) as (survivor, _), reaping([]) as spawned:
        # The next round's gateways start while this round runs.
        coming = spawn(env, GATEWAYS_PER_ROUND, spawned)
        for round_ in range(spec["rounds"]):
            started = coming
            if round_ + 1 < spec["rounds"]:
                coming = spawn(env, GATEWAYS_PER_ROUND, spawned)
            for url, proc in started:
                wait_http_ok(url + "/healthz", proc=proc)
            kill_points = [rng.randint(*spec["kill_at"]) for _ in started]
            results = anyio.run(one_round, started, kill_points, survivor, spec, rng)
            for kill_at, tasks in zip(kill_points, results, strict=True):
                for task_id, readers in tasks:
                    where = f"killed after seq {kill_at}, task {task_id}"
                    stored = stored_log(redis_url, env["REDIS_PREFIX"], task_id)
                    problems += audit(survivor, stored, readers, where)
            if problems:
                break  # one round shows it; the next would only repeat it
    assert not problems, "\n".join(problems)
