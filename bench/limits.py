"""What the deployment-wide limits add to a request, measured two ways::

    python -m bench.limits . --posts 400 --rounds 6
    python -m bench.limits /tmp/before . --env MAX_RUNNING=1 --env MAX_QUEUED=100000 --configs off

First, in this process, the store's calls one after another on one ``RedisStore`` (rounds
interleaved): a plain round trip (``GET``, the floor), the rate limit's check
(``limits.take``: one script call), a queued ``create`` without and with ``max_queued`` (the
bound's count and the create's writes in one script call). It prints the median over rounds of
the µs of wall time and of this process's CPU per call.

Then ``POST /api/tasks`` against gateways (Redis store) with the rate limit off and on, of one
tree or several. Each (tree, config) pair is one ``bench.gateway_server`` on one private Redis
(each its own prefix); a round sends ``--posts`` submissions of a one-word echo task one after
another on a keep-alive connection to each gateway in turn (A B B A …). Per pair it prints the
median over rounds of the p50 and p99 latency (client side, ms) and of the gateway's CPU per
POST (µs, from ``/proc``; the tasks' runs included). ``on`` sets ``RATE_LIMIT_RPS`` so high
nothing is refused: the cost of the check alone, one script call to Redis per request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench.ab import _start_gateway
from bench.procs import Child, redis_server, self_cpu_seconds, wait_port
from bench.stats import pct
from gateway.protocol import TaskRecord, new_task_id, now_ms
from gateway.store import RedisStore

CONFIGS = {"off": {"RATE_LIMIT_RPS": "0"}, "on": {"RATE_LIMIT_RPS": "100000000"}}


async def _round(gateway: Child, posts: int) -> tuple[list[float], float]:
    """``posts`` submissions one after another: their latencies (ms) and the µs CPU each."""
    body = {"query": "w", "agentType": 0}
    latencies = []
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        await client.post("/api/tasks", json=body)  # the connection, opened
        cpu = gateway.cpu()
        for _ in range(posts):
            started = time.perf_counter()
            answer = await client.post("/api/tasks", json=body)
            latencies.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 202:
                raise RuntimeError(f"POST answered {answer.status_code}: {answer.text}")
        cpu = gateway.cpu() - cpu
    await asyncio.sleep(0.5)  # the tasks end before the next gateway's round
    return latencies, cpu / posts * 1e6


def _record() -> TaskRecord:
    task_id = new_task_id()
    return TaskRecord(task_id, task_id, 0, "w", created_at=now_ms(), request={"query": "w"})


async def store_calls(url: str, calls: int, rounds: int) -> None:
    """The store's calls of a request, in this process (see the module's docstring)."""
    store = RedisStore(url, prefix="bench-limits-store")
    await store.start()
    ops = {
        "round trip (GET)": lambda: store.get("none"),
        "rate check (limits.take)": lambda: store.limits.take("k", 1e8, 10),
        "queued create": lambda: store.create(_record(), queue=True),
        "queued create, bounded": lambda: store.create(_record(), queue=True, max_queued=10**9),
    }
    seen: dict[str, list[tuple[float, float]]] = {name: [] for name in ops}
    try:
        for index in range(rounds):
            for name in ops if index % 2 == 0 else list(ops)[::-1]:
                cpu, started = self_cpu_seconds(), time.perf_counter()
                for _ in range(calls):
                    await ops[name]()
                wall = (time.perf_counter() - started) / calls * 1e6
                seen[name].append((wall, (self_cpu_seconds() - cpu) / calls * 1e6))
    finally:
        await store.close()
    print(f"store calls, {calls} a round, medians over {rounds} rounds:")
    for name, rows in seen.items():
        wall, cpu = (statistics.median(column) for column in zip(*rows, strict=True))
        print(f"  {name}: {wall:.0f} µs wall, {cpu:.0f} µs CPU")


async def run(args: argparse.Namespace) -> None:
    extra = dict(item.split("=", 1) for item in args.env)
    with redis_server() as (url, _):
        await store_calls(url, args.calls, args.rounds)
        gateways: dict[str, Child] = {}
        try:
            for tree in args.trees:
                for config in args.configs:
                    env = {
                        "REDIS_URL": url,
                        "REDIS_PREFIX": f"bench-limits-{len(gateways)}",
                        "ECHO_TOKEN_DELAY_MS": "0",
                        "LOG_LEVEL": "warning",
                        **CONFIGS[config],
                        **extra,
                    }
                    name = f"{tree} {config}"
                    gateways[name] = _start_gateway(name, Path(tree), env, 1, None)
            for gateway in gateways.values():
                wait_port(gateway.port, gateway.proc)
            seen: dict[str, list[tuple[float, float, float]]] = {name: [] for name in gateways}
            names = list(gateways)
            for index in range(args.rounds):
                for name in names if index % 2 == 0 else names[::-1]:
                    latencies, cpu = await _round(gateways[name], args.posts)
                    p50, p99 = pct(latencies, 0.5) or 0.0, pct(latencies, 0.99) or 0.0
                    seen[name].append((p50, p99, cpu))
                    print(f"round {index} {name}: p50 {p50:.3f} ms, p99 {p99:.3f} ms, {cpu:.0f} µs")
            print("medians over rounds:")
            for name, rows in seen.items():
                p50, p99, cpu = (statistics.median(column) for column in zip(*rows, strict=True))
                print(f"  {name}: p50 {p50:.3f} ms, p99 {p99:.3f} ms, {cpu:.0f} µs CPU/POST")
        finally:
            for gateway in gateways.values():
                gateway.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__)
    parser.add_argument("trees", nargs="+", help="checkouts whose gateway to run")
    parser.add_argument("--posts", type=int, default=400)
    parser.add_argument("--calls", type=int, default=2000, help="store calls a round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--env", action="append", default=[], help="K=V for every gateway")
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
