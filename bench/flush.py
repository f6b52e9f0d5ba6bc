"""CPU of one Redis flush: through redis-py's script call vs the flusher's own lane.

One process, one private ``redis-server``, the two ways interleaved six times, so a noisy
machine slows both alike; prints the median CPU (``time.process_time``) per flush for a few
batch shapes (tasks x messages per task):

    python -m bench.flush
"""

from __future__ import annotations

import time
from typing import Any

import uvloop

from bench.procs import redis_server
from gateway.protocol import TaskRecord, new_task_id, now_ms
from gateway.store import RedisStore

SHAPES = ((4, 1), (20, 2), (100, 1))
FLUSHES = 300
REPEATS = 6


async def measure(url: str, tasks: int, per_task: int) -> dict[str, float]:
    store = RedisStore(url, prefix=f"agw-bench-{new_task_id()}", result_ttl=60)
    flusher = store._flusher  # not started: the flushes below are the only ones
    lane = flusher._lane
    ids = []
    for _ in range(tasks):
        record = TaskRecord(
            task_id=new_task_id(), request_id="r", agent_type=0, query="q", created_at=now_ms()
        )
        await store.create(record)
        await store.claim(record.task_id, "bench", 600_000)
        ids.append(record.task_id)
    body: dict[str, Any] = {
        "taskId": ids[0],
        "requestId": "r" * 32,
        "messageId": "m" * 32,
        "messageType": "agent_stream",
        "messageTime": now_ms(),
        "isFinal": False,
        "result": "token ",
    }
    samples: dict[str, list[float]] = {"redis-py": [], "lane": []}
    try:
        for _ in range(REPEATS):
            for way in samples:
                flusher._lane = lane if way == "lane" else None
                cpu = 0.0
                for _ in range(FLUSHES):
                    for task_id in ids:
                        for _ in range(per_task):
                            await store.append(task_id, dict(body))
                    batch, flusher._dirty = flusher._dirty, {}
                    started = time.process_time()
                    await flusher._flush(batch)
                    cpu += time.process_time() - started
                samples[way].append(cpu / FLUSHES * 1e6)
    finally:
        if lane is not None:
            lane.close()
        await store._client.aclose()
    return {way: sorted(v)[len(v) // 2] for way, v in samples.items()}


def main() -> None:
    print("| tasks x messages | redis-py µs CPU/flush | lane µs CPU/flush |")
    print("|---|---|---|")
    with redis_server() as (url, _):
        for tasks, per_task in SHAPES:
            got = uvloop.run(measure(url, tasks, per_task))
            print(f"| {tasks} x {per_task} | {got['redis-py']:.0f} | {got['lane']:.0f} |")


if __name__ == "__main__":
    main()
