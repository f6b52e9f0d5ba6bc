"""Interleaved A/B of gateway trees under the relay load of bench a.

The VMs this runs on drift by a third in speed within an hour, so a before/after pair measured
minutes apart proves little. Here the gateways of two (or more) checkouts run side by side
against one upstream and one Redis, and the runs alternate (A B B A A B …), so each pair shares
the machine's mood::

    git worktree add /tmp/before <rev>
    python -m bench.ab /tmp/before . --streams 200 --tokens 200 --runs 4
    python -m bench.ab /tmp/before . --streams 1 --tokens 10 --in-turn 100
    python -m bench.ab /tmp/before . --agent-type 5 --markers result,toolThought --streams 1

Each tree's ``bench.gateway_server`` starts with that tree as its working directory, so its own
``gateway`` package is the one imported; the upstream, Redis and the load client are this
checkout's. ``--env K=V`` sets gateway settings (``--env FLUSH_INTERVAL_MS=4``), ``--memory``
uses the memory store. ``--workers 1,2`` runs each tree's gateway as that many processes (one
checkout twice: 1 worker against 2 at the same load), ``--pin CPUS`` puts the gateways on those
CPUs and the upstream, Redis and the load client on the others (see ``python -m bench --pin``).
Prints one line per run and each tree's median µs CPU per token and lag p99.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import uvloop

from bench.procs import (
    Child,
    free_port,
    pinned,
    raise_fd_limit,
    redis_server,
    start_python,
    wait_port,
)
from bench.run import Placement, _gateway_env, spread_workers
from bench.scenarios import Sizes, World, run_streams, warm_up
from bench.targets import Target


def _start_gateway(
    name: str, tree: Path, env: dict[str, str], workers: int, cpus: Collection[int] | None
) -> Child:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.gateway_server", "--port", str(port)]
        + (["--workers", str(workers)] if workers > 1 else []),
        env={**os.environ, **env},
        cwd=tree,
        preexec_fn=pinned(cpus) if cpus else None,
    )
    return Child(name, proc, port)


def _line(tree: str, out: dict[str, Any]) -> str:
    ttft, lag = out["added_ttft_ms"], out["token_lag_ms"]
    return (
        f"{tree}: {out['server_cpu_us_per_token']} µs CPU/token, TTFT p50/p99 "
        f"{ttft.get('p50')}/{ttft.get('p99')} ms, lag p50/p99 {lag.get('p50')}/{lag.get('p99')} "
        f"ms, gaps {out['gaps']}, duplicates {out['duplicates']}, stuck {out['stuck']}"
    )


def _labels(args: argparse.Namespace) -> list[str]:
    """Each gateway's name in the output: its tree, and its workers when ``--workers`` is set."""
    if not args.workers:
        return [str(tree) for tree in args.trees]
    return [f"{tree} ({w} workers)" for tree, w in zip(args.trees, args.workers, strict=True)]


async def run(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    raise_fd_limit()
    sizes = Sizes()
    labels = _labels(args)
    workers = args.workers or [1] * len(args.trees)
    placement = Placement.of(args.pin, max(workers))
    if placement.load:
        os.sched_setaffinity(0, placement.load)  # the load client
    figures: dict[str, dict[str, list[float]]] = {label: {"cpu": [], "lag": []} for label in labels}
    with redis_server(placement.load) as (redis_url, redis_child):
        upstream = start_python(
            "upstream", "bench.upstream", ["--ping", str(sizes.idle_ping)], cpus=placement.load
        )
        env = _gateway_env(sizes, upstream, redis_url)
        env.update(kv.split("=", 1) for kv in args.env)
        if args.memory:
            env["REDIS_URL"] = ""
        gateways = [
            _start_gateway(f"g{i}", tree, env, count, placement.servers)
            for i, (tree, count) in enumerate(zip(args.trees, workers, strict=True))
        ]
        try:
            for child in [upstream, *gateways]:
                wait_port(child.port, child.proc)
            for gateway, count in zip(gateways, workers, strict=True):
                spread_workers(gateway, dataclasses.replace(placement, workers=count))
            markers = _markers(args)
            targets = {
                label: Target("gateway", g, marker, agent_type=args.agent_type)
                for label, g, marker in zip(labels, gateways, markers, strict=True)
            }
            first = next(iter(targets.values()))
            world = World(targets, upstream, first, redis_child, sizes)
            await warm_up(world)
            for i in range(args.runs):
                order = list(targets) if i % 2 == 0 else list(reversed(targets))
                for tree in order:
                    out = await run_streams(
                        world, targets[tree], args.streams, args.tokens, args.in_turn
                    )
                    figures[tree]["cpu"].append(out["server_cpu_us_per_token"])
                    figures[tree]["lag"].append(out["token_lag_ms"].get("p99"))
                    print(_line(tree, out), flush=True)
        finally:
            for child in [upstream, *gateways]:
                child.stop()
    return figures


def _markers(args: argparse.Namespace) -> list[bytes]:
    """What precedes a token in each tree's frames: ``--markers`` (one payload field per tree),
    else the relay's ``result``."""
    fields = args.markers.split(",") if args.markers else ["result"] * len(args.trees)
    return [b'"%s":"' % field.strip().encode() for field in fields]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("trees", nargs="+", type=Path, help="checkouts to compare")
    parser.add_argument("--streams", type=int, default=200, help="concurrent streams")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per stream")
    parser.add_argument("--in-turn", type=int, default=1, help="rounds of streams, in turn")
    parser.add_argument("--runs", type=int, default=4, help="runs per tree, alternating")
    parser.add_argument("--env", action="append", default=[], help="K=V for the gateways")
    parser.add_argument("--memory", action="store_true", help="the memory store")
    parser.add_argument("--agent-type", type=int, default=1, help="1 relay, 5 ReAct")
    parser.add_argument(
        "--markers",
        default="",
        help="per tree, the payload field of a token frame (result, toolThought), comma-separated",
    )
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[],
        help="per tree, its gateway's processes, comma-separated (e.g. . . --workers 1,2)",
    )
    parser.add_argument(
        "--pin",
        default="",
        metavar="CPUS",
        help="the gateways on these CPUs, the upstream, Redis and the load client on the others",
    )
    args = parser.parse_args(argv)
    if args.workers and (len(args.workers) != len(args.trees) or min(args.workers) < 1):
        parser.error("--workers takes one count (>= 1) per tree")
    if args.pin:
        try:
            Placement.of(args.pin, 1)
        except ValueError as exc:
            parser.error(str(exc))
    if args.markers and len(args.markers.split(",")) != len(args.trees):
        parser.error("--markers takes one field per tree")
    missing = [t for t in args.trees if not (t / "gateway").is_dir()]
    if missing:
        parser.error(f"not a checkout of this project: {', '.join(map(str, missing))}")
    if any("=" not in kv for kv in args.env):
        parser.error("--env takes K=V")
    print(f"load average before: {os.getloadavg()}", flush=True)
    figures = uvloop.run(run(args))
    for tree, values in figures.items():
        cpu, lag = values["cpu"], values["lag"]
        print(
            f"{tree}: median {statistics.median(cpu):.1f} µs CPU/token over {cpu}; "
            f"lag p99 median {statistics.median(lag):.1f} ms over {lag}"
        )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
