"""Issue 22: a finished task replayed from the start — one reader, then a herd — A/B by tree.

Each tree's gateway (``bench.gateway_server``, the memory store unless ``REDIS_URL`` is set,
the echo agent writing as fast as it can) runs one finished echo task of ``--words`` words
(2,000 deltas under one answer). Then, in turns (A B B A …), the same requests go to each:

* one reader ``GET /api/tasks/{id}/events`` from 0, ``--single`` times in a row: its bytes,
  frames and time to caught up (the response ends with the task's finish);
* a herd of ``--herd`` readers connecting at once from 0 (a deploy's reconnect): the time until
  the last has everything, the bytes sent, and the gateway's CPU seconds over it.

    git worktree add /tmp/before <rev>
    python -m bench.replay /tmp/before . --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.ab import _start_gateway
from bench.client import Request, post_json, simple_request
from bench.procs import Child, raise_fd_limit, wait_port


async def finished_task(gateway: Child, words: int) -> str:
    query = " ".join(f"w{i}" for i in range(words))
    status, body = await simple_request(
        gateway.port, post_json("/api/tasks", {"query": query, "agentType": 0})
    )
    assert status == 202, body
    task_id = str(orjson.loads(body)["taskId"])
    await simple_request(gateway.port, Request("GET", f"/api/tasks/{task_id}/events"))
    return task_id


async def single(gateway: Child, task_id: str, times: int) -> dict[str, float]:
    """Median time to caught up of one reader from 0, with its bytes and frames."""
    seconds: list[float] = []
    body = b""
    for _ in range(times):
        started = time.perf_counter()
        _, body = await simple_request(gateway.port, Request("GET", f"/api/tasks/{task_id}/events"))
        seconds.append(time.perf_counter() - started)
    return {
        "ms": statistics.median(seconds) * 1000,
        "bytes": len(body),
        "frames": body.count(b"data: "),
    }


async def herd(gateway: Child, task_id: str, readers: int) -> dict[str, float]:
    """``readers`` readers from 0 at once: seconds until the last has all, bytes, CPU."""
    request = Request("GET", f"/api/tasks/{task_id}/events")
    cpu = gateway.cpu()
    started = time.perf_counter()
    bodies = await asyncio.gather(*(simple_request(gateway.port, request) for _ in range(readers)))
    seconds = time.perf_counter() - started
    return {
        "s": seconds,
        "MB": sum(len(body) for _, body in bodies) / 1e6,
        "cpu_s": gateway.cpu() - cpu,
    }


async def run(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    env = {"ECHO_TOKEN_DELAY_MS": "0"}
    gateways = [
        _start_gateway(str(i), Path(tree), env, 1, None) for i, tree in enumerate(args.trees)
    ]
    results: dict[str, list[dict[str, Any]]] = {tree: [] for tree in args.trees}
    try:
        for gateway in gateways:
            wait_port(gateway.port, gateway.proc)
        tasks = [await finished_task(g, args.words) for g in gateways]
        order = list(range(len(gateways)))
        for run_index in range(args.runs):
            for i in order if run_index % 2 == 0 else order[::-1]:
                out = {
                    **await single(gateways[i], tasks[i], args.single),
                    **await herd(gateways[i], tasks[i], args.herd),
                }
                results[args.trees[i]].append(out)
                print(args.trees[i], {k: round(v, 3) for k, v in out.items()}, flush=True)
    finally:
        for gateway in gateways:
            gateway.stop()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="+")
    parser.add_argument("--words", type=int, default=2000)
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--herd", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    raise_fd_limit()
    results = uvloop.run(run(args))
    for tree, runs in results.items():
        medians = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
        print("median", tree, medians)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
