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
uses the memory store. Prints one line per run and each tree's median µs CPU per token.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

from bench.procs import Child, free_port, raise_fd_limit, redis_server, start_python, wait_port
from bench.run import _gateway_env
from bench.scenarios import Sizes, World, run_streams, warm_up
from bench.targets import Target


def _start_gateway(name: str, tree: Path, env: dict[str, str]) -> Child:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.gateway_server", "--port", str(port)],
        env={**os.environ, **env},
        cwd=tree,
    )
    return Child(name, proc, port)


def _line(tree: str, out: dict[str, Any]) -> str:
    ttft, lag = out["added_ttft_ms"], out["token_lag_ms"]
    return (
        f"{tree}: {out['server_cpu_us_per_token']} µs CPU/token, TTFT p50/p99 "
        f"{ttft.get('p50')}/{ttft.get('p99')} ms, lag p50/p99 {lag.get('p50')}/{lag.get('p99')} "
        f"ms, gaps {out['gaps']}, duplicates {out['duplicates']}, stuck {out['stuck']}"
    )


async def run(args: argparse.Namespace) -> dict[str, list[float]]:
    raise_fd_limit()
    sizes = Sizes()
    cpu: dict[str, list[float]] = {str(tree): [] for tree in args.trees}
    with redis_server() as (redis_url, redis_child):
        upstream = start_python("upstream", "bench.upstream", ["--ping", str(sizes.idle_ping)])
        env = _gateway_env(sizes, upstream, redis_url)
        env.update(kv.split("=", 1) for kv in args.env)
        if args.memory:
            env["REDIS_URL"] = ""
        gateways = [_start_gateway(f"g{i}", t, env) for i, t in enumerate(args.trees)]
        try:
            for child in [upstream, *gateways]:
                wait_port(child.port, child.proc)
            markers = _markers(args)
            targets = {
                str(tree): Target("gateway", g, marker, agent_type=args.agent_type)
                for tree, g, marker in zip(args.trees, gateways, markers, strict=True)
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
                    cpu[tree].append(out["server_cpu_us_per_token"])
                    print(_line(tree, out), flush=True)
        finally:
            for child in [upstream, *gateways]:
                child.stop()
    return cpu


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
    args = parser.parse_args(argv)
    if args.markers and len(args.markers.split(",")) != len(args.trees):
        parser.error("--markers takes one field per tree")
    missing = [t for t in args.trees if not (t / "gateway").is_dir()]
    if missing:
        parser.error(f"not a checkout of this project: {', '.join(map(str, missing))}")
    if any("=" not in kv for kv in args.env):
        parser.error("--env takes K=V")
    cpu = uvloop.run(run(args))
    for tree, values in cpu.items():
        print(f"{tree}: median {statistics.median(values):.1f} µs CPU/token over {values}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
