"""Start the processes, run the scenarios, write the table and the JSON file."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.procs import (
    Child,
    descendants,
    parse_cpus,
    pin,
    raise_fd_limit,
    redis_server,
    self_cpu_seconds,
    start_python,
    wait_port,
)
from bench.report import table, verdicts
from bench.scenarios import SCENARIOS, SMOKE, Sizes, World, warm_up
from bench.starts import starts
from bench.targets import Target, make_targets

RESULTS = Path(__file__).parent / "results"

#: scenario letter (as in the issue) → name
LETTERS = {
    "a": "relay",
    "b": "idle",
    "c": "fanout",
    "d": "mirroring",
    "e": "resume",
    "f": "starts",
}
ALL = {**SCENARIOS, "starts": starts}


def _gateway_env(sizes: Sizes, upstream: Child, redis_url: str) -> dict[str, str]:
    return {
        # Hundreds of streams start at once: room for their concurrent Redis commands.
        "REDIS_URL": redis_url + "?max_connections=4000",
        "REDIS_PREFIX": f"agw-bench-{secrets.token_hex(4)}",
        "MAX_RUNNING": str(sizes.max_running),
        "MAX_QUEUED": "100000",
        "HEARTBEAT_INTERVAL": str(sizes.idle_ping),
        "LLM_BASE_URL": f"{upstream.url}/v1",
        "LLM_MAX_RETRIES": "0",
        "LLM_IDLE_TIMEOUT": "900",
    }


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the processes run: the servers under test (the gateways, the naive relay) on
    ``servers``, the upstream, Redis and the load client on ``load`` (None: anywhere); the
    Redis-store gateway as ``workers`` processes."""

    servers: frozenset[int] | None = None
    load: frozenset[int] | None = None
    workers: int = 1

    @classmethod
    def of(cls, pin_cpus: str, workers: int) -> Placement:
        """``--pin CPUS``: the servers there, the rest on the other CPUs (anywhere if none is
        left: then the load shares the servers' CPUs, and the figures are not per core)."""
        if not pin_cpus:
            return cls(workers=workers)
        servers = frozenset(parse_cpus(pin_cpus))
        load = frozenset(os.sched_getaffinity(0)) - servers
        return cls(servers, load or None, workers)

    def describe(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "server_cpus": sorted(self.servers) if self.servers else "any",
            "load_cpus": sorted(self.load) if self.load else "any",
        }


def spread_workers(gateway: Child, placement: Placement, timeout: float = 60.0) -> None:
    """With at least as many server CPUs as workers, pin each worker to a CPU of its own."""
    cpus = sorted(placement.servers or ())
    if placement.workers < 2 or len(cpus) < placement.workers:
        return
    deadline = time.monotonic() + timeout
    while len(workers := _worker_pids(gateway)) < placement.workers:
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway's workers did not start")
        time.sleep(0.05)
    for pid, cpu in zip(workers, cpus, strict=False):
        for process in descendants(pid):
            pin(process, {cpu})


def _worker_pids(gateway: Child) -> list[int]:
    pids = []
    for pid in descendants(gateway.pid)[1:]:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():
                pids.append(pid)
    return sorted(pids)


async def run(
    names: Sequence[str], sizes: Sizes, chat_pool: int, placement: Placement | None = None
) -> dict[str, Any]:
    """Run ``names`` against freshly started processes; returns the results document."""
    placement = placement or Placement()
    raise_fd_limit()
    if placement.load:
        os.sched_setaffinity(0, placement.load)  # the load client
    started = time.time()
    load_before = os.getloadavg()
    cpu0 = self_cpu_seconds()
    results: dict[str, Any] = {}
    servers, load = placement.servers, placement.load
    with redis_server(load) as (redis_url, redis_child):
        upstream = start_python(
            "upstream", "bench.upstream", ["--ping", str(sizes.idle_ping)], cpus=load
        )
        env = _gateway_env(sizes, upstream, redis_url)
        pool = ["--chat-pool", str(chat_pool)]
        gateway = start_python(
            "gateway",
            "bench.gateway_server",
            [*pool, "--workers", str(placement.workers)],
            env,
            cpus=servers,
        )
        memory = start_python(
            "gateway-memory", "bench.gateway_server", pool, {**env, "REDIS_URL": ""}, servers
        )
        naive = start_python(
            "naive",
            "bench.naive",
            [
                "--redis",
                env["REDIS_URL"],
                "--upstream",
                f"{upstream.url}/v1",
                "--ping",
                str(sizes.idle_ping),
                "--prefix",
                env["REDIS_PREFIX"] + ":naive",
            ],
            cpus=servers,
        )
        children = [upstream, gateway, memory, naive]
        try:
            for child in children:
                wait_port(child.port, child.proc)
            spread_workers(gateway, placement)
            world = World(
                targets=make_targets(upstream, gateway, naive),
                upstream=upstream,
                gateway_memory=Target("gateway", memory, b'"result":"'),
                redis=redis_child,
                sizes=sizes,
                redis_url=redis_url,
            )
            await warm_up(world)
            for name in names:
                t = time.monotonic()
                print(f"[bench] {name} …", file=sys.stderr, flush=True)
                results[name] = await ALL[name](world)
                print(
                    f"[bench] {name} done in {time.monotonic() - t:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            for child in children:
                child.stop()
    results["targets"] = verdicts(results)
    results["meta"] = {
        "started": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(),
        "seconds": round(time.time() - started, 1),
        "client_cpu_s": round(self_cpu_seconds() - cpu0, 2),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "sizes": sizes.__dict__,
        "chat_pool": chat_pool,
        "upstream_client": f"httpx (pool {chat_pool})" if chat_pool else "wire",
        "smoke": sizes.settle is False,
        **placement.describe(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    return results


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write(results: dict[str, Any], out: Path | None) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out or RESULTS / f"bench-{stamp}{'-smoke' if results['meta']['smoke'] else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return path


def _select(sizes: Sizes, levels: str, paths: str) -> Sizes:
    """``sizes`` with scenario a cut to the given stream counts and paths."""
    if paths:
        wanted = tuple(p.strip() for p in paths.split(",") if p.strip())
        unknown = set(wanted) - set(sizes.relay_paths)
        if unknown:
            raise ValueError(f"--paths: unknown {sorted(unknown)}; of {list(sizes.relay_paths)}")
        sizes = dataclasses.replace(sizes, relay_paths=wanted)
    if levels:
        counts = {int(n) for n in levels.split(",") if n.strip()}
        rows = [
            row
            for row in zip(sizes.relay_levels, sizes.relay_tokens, sizes.relay_rounds, strict=True)
            if row[0] in counts
        ]
        if not rows:
            raise ValueError(f"--levels: none of {sorted(counts)} in {list(sizes.relay_levels)}")
        level, tokens, rounds = (tuple(column) for column in zip(*rows, strict=True))
        sizes = dataclasses.replace(
            sizes, relay_levels=level, relay_tokens=tokens, relay_rounds=rounds
        )
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "scenarios",
        nargs="*",
        help="a/relay b/idle c/fanout d/mirroring e/resume f/starts (default: all)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a correctness check")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument(
        "--chat-pool",
        type=int,
        default=0,
        help="N: the relay's ChatClient gets an injected httpx client with a pool of N, which "
        "serves complete() only: its streams take the wire client as with 0 (the default)",
    )
    parser.add_argument(
        "--levels", default="", help="a: only these stream counts, e.g. 1,200 (default: all)"
    )
    parser.add_argument(
        "--paths",
        default="",
        help="a: only these paths, of direct,gateway,react,naive (default: all), e.g. react",
    )
    parser.add_argument(
        "--pin",
        default="",
        metavar="CPUS",
        help="run the gateways and the naive relay on these CPUs (e.g. 1, or 2-3) and the "
        "upstream, Redis and this load client on the others, so a figure is per server core",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="the Redis-store gateway as N processes on its port (serve gateway --workers N); "
        "with --pin listing at least N CPUs, each worker gets one of them",
    )
    args = parser.parse_args(argv)
    try:
        placement = Placement.of(args.pin, args.workers)
    except ValueError as exc:
        parser.error(str(exc))
    if args.workers < 1:
        parser.error("--workers: at least 1")
    names = [LETTERS.get(s, s) for s in args.scenarios] or list(ALL)
    unknown = [n for n in names if n not in ALL]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(LETTERS.items())}")
    sizes = SMOKE if args.smoke else Sizes()
    try:
        sizes = _select(sizes, args.levels, args.paths)
    except ValueError as exc:
        parser.error(str(exc))
    results = uvloop.run(run(names, sizes, args.chat_pool, placement))
    path = write(results, args.out)
    meta = results["meta"]
    print(
        f"workers {meta['workers']}, server CPUs {meta['server_cpus']}, load CPUs "
        f"{meta['load_cpus']}, load average {meta['loadavg_before']} → {meta['loadavg_after']}"
    )
    print(table(results))
    print(f"results: {path}")
    return 0
