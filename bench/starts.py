"""f. task starts (issue 23): bursts of new tasks, each streaming a few tokens.

At each level ``n`` starts are spread evenly over one second (``n`` starts/s), each a relayed
completion of ``start_tokens`` tokens, against the direct upstream and the gateway (Redis store)
in alternate runs. What a start costs shows here, not hidden behind the tokens of long streams:
the added time to first token, the gateway's CPU per start (the few tokens included), and what
Redis was asked per start — its commands by name and its read events (≈ the request batches it
received, so the round trips of all connections) from ``INFO`` before and after each run.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from typing import Any

import redis

from bench.client import SSEReader
from bench.scenarios import World, run_streams
from bench.stats import rnd, summary_ms


def _redis_counters(url: str) -> dict[str, int]:
    """Redis's own counters: calls per command, read events, commands processed."""
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("stats")
        commands = client.info("commandstats")
    finally:
        client.close()
    out = {f"cmd:{name.removeprefix('cmdstat_')}": int(v["calls"]) for name, v in commands.items()}
    out["reads"] = int(stats.get("total_reads_processed", 0))
    out["commands"] = int(stats["total_commands_processed"])
    return out


def _per_start(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, Any]:
    """What Redis handled per start between two reads of its counters (the two ``INFO``
    calls themselves taken off)."""
    diff = {k: v - before.get(k, 0) for k, v in after.items()}
    diff["cmd:info"] = diff.get("cmd:info", 0) - 2
    diff["commands"] -= 2
    diff["reads"] -= 2
    by_command = {
        k.removeprefix("cmd:"): round(v / n, 2)
        for k, v in sorted(diff.items(), key=lambda kv: -kv[1])
        if k.startswith("cmd:") and v > 0
    }
    return {
        "commands": round(diff["commands"] / n, 2),
        "reads": round(diff["reads"] / n, 2),
        "by_command": by_command,
    }


async def _run(world: World, path: str, n: int) -> dict[str, Any]:
    target = world.targets[path]
    url = world.redis_url if path == "gateway" else ""
    before = await asyncio.to_thread(_redis_counters, url) if url else None
    readers: list[SSEReader] = []
    out = await run_streams(world, target, n, world.sizes.start_tokens, readers=readers)
    # The start's own part: from the request to the response head (the gateway answers once
    # the task's record is written), and from the head to the first token.
    heads = [r.head_ns - r.started_ns for r in readers if r.head_ns]
    out["head_ms"] = summary_ms(heads)
    if before is not None:
        after = await asyncio.to_thread(_redis_counters, url)
        out["redis_per_start"] = _per_start(before, after, n)
    cpu = out["cpu_s"]
    out["server_cpu_us_per_start"] = rnd(cpu["server"] * 1e6 / n)
    if "redis" in cpu and path == "gateway":
        out["redis_cpu_us_per_start"] = rnd(cpu["redis"] * 1e6 / n)
    return out


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by added TTFT p99, and every run's p99 (the VM stalls now and then)."""
    p99s = [r["added_ttft_ms"]["p99"] for r in runs]
    ordered = sorted(runs, key=lambda r: r["added_ttft_ms"]["p99"] or 0.0)
    median = ordered[(len(ordered) - 1) // 2]
    return {
        **median,
        "runs_ttft_p99_ms": p99s,
        "runs_cpu_us_per_start": [r["server_cpu_us_per_start"] for r in runs],
        "all_finished": all(r["finished"] == r["streams"] for r in runs),
        "all_tokens": all(r["tokens"] == r["expected_tokens"] for r in runs),
        "all_gaps_duplicates": sum(r["gaps"] + r["duplicates"] for r in runs),
        "median_ttft_p99_ms": rnd(statistics.median(p for p in p99s if p is not None)),
    }


async def starts(world: World) -> dict[str, Any]:
    """Each level: one run of the direct upstream (the floor), then ``start_runs`` of the
    gateway."""
    sizes = world.sizes
    out: dict[str, Any] = {}
    for n in sizes.start_levels:
        runs: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
        for path in ("direct", *["gateway"] * sizes.start_runs):
            runs[path].append(await _run(world, path, n))
            await asyncio.sleep(sizes.pause)
        out[str(n)] = {path: _summary(r) for path, r in runs.items()}
    return out


def verdicts(result: dict[str, Any], check: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 23's target: added TTFT p99 ≤ 20 ms at the top level; nothing lost at any
    (``check`` makes a verdict, as ``bench.report`` does)."""
    levels = sorted(result, key=int)
    out = [
        check(
            f"f: added TTFT p99 @{levels[-1]} starts/s (ms, median run)",
            result[levels[-1]]["gateway"]["added_ttft_ms"]["p99"],
            20,
        )
    ]
    for level in levels:
        g = result[level]["gateway"]
        lost = g["all_gaps_duplicates"] + (not g["all_finished"]) + (not g["all_tokens"])
        out.append(check(f"f: gaps+duplicates+unfinished @{level} starts/s", lost, 0))
    return out


def table(result: dict[str, Any], row: Callable[[list[Any]], str]) -> list[str]:
    """The Markdown lines of f (``row`` formats one, as ``bench.report`` does)."""
    lines = [
        "### f. task starts within one second, a few tokens each (added TTFT in ms)",
        "",
        row(
            [
                "starts/s",
                "path",
                "TTFT p50",
                "TTFT p99",
                "p99 of each run",
                "µs CPU/start",
                "Redis cmds/start",
                "Redis reads/start",
                "tokens",
                "gaps",
                "dups",
            ]
        ),
        "|" + "---|" * 11,
    ]
    for level in sorted(result, key=int):
        for path in ("direct", "gateway"):
            r = result[level][path]
            redis_use = r.get("redis_per_start") or {}
            lines.append(
                row(
                    [
                        level,
                        path,
                        r["added_ttft_ms"]["p50"],
                        r["added_ttft_ms"]["p99"],
                        ", ".join(str(p) for p in r["runs_ttft_p99_ms"]),
                        r["server_cpu_us_per_start"],
                        redis_use.get("commands"),
                        redis_use.get("reads"),
                        f"{r['tokens']}/{r['expected_tokens']}",
                        r["gaps"],
                        r["duplicates"],
                    ]
                )
            )
    lines.append("")
    return lines
