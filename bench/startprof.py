"""What one task start costs the gateway in Python: calls and CPU per start, in-process.

The bench's gateway (:func:`bench.gateway_server.serve`: uvicorn, the relay agent, the Redis
store) runs in a thread of this process against a private ``redis-server`` (``REDIS_URL`` if
set, as everywhere in the bench) and the bench's upstream; the load client runs in the main
thread. ``N`` starts of ``TOKENS`` tokens each are sent in waves of ``WAVE`` at once, twice:
once plain, for the gateway thread's CPU per start (its own clock), once under ``cProfile``
(enabled in the gateway's thread only), for its Python and builtin calls per start. The calls
hardly move from run to run (the same code path per start; only how many messages share a
flush moves them, ±2 % in waves, less in turn), so a change to the start path shows as a
call-count delta even on a loaded machine, where CPU figures wander::

    python -m bench.startprof                       # 200 starts, 5 tokens, waves of 20
    python -m bench.startprof --starts 100 --wave 1 --warm 20   # in turn: one flush a message
    python -m bench.startprof --starts 400 --top 30 --sort ncalls
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import cProfile
import os
import pstats
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import uvloop

from bench.client import SSEReader, open_stream, post_json
from bench.procs import free_port, raise_fd_limit, redis_server, start_python, wait_port
from bench.run import _gateway_env
from bench.scenarios import Sizes, query

MARKER = b'"result":"'


class GatewayThread:
    """The gateway served on its own event loop, in a daemon thread of this process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from bench.gateway_server import serve  # after the environment is set

        with contextlib.suppress(RuntimeError):  # stopped by ``stop``
            self.loop.run_until_complete(serve(self.port))

    def stop(self) -> None:
        """Stop the gateway's loop (before Redis and the upstream go away)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the gateway's thread (so ``cProfile`` hooks that thread) and wait."""
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            done.set_result(fn())

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=30)

    def cpu(self) -> float:
        """Seconds of CPU the gateway's thread has used."""
        ident = self.thread.ident
        if ident is None:
            raise RuntimeError("the gateway thread has not started")
        return time.clock_gettime(time.pthread_getcpuclockid(ident))


async def _starts(port: int, n: int, tokens: int, wave: int, tps: float) -> int:
    """``n`` starts, ``wave`` at a time; returns the tokens received."""
    body = post_json(
        "/api/tasks", {"query": query(tokens, tps), "agentType": 1}, accept="text/event-stream"
    )
    received = 0
    for first in range(0, n, wave):
        readers = [SSEReader(MARKER) for _ in range(min(wave, n - first))]
        for reader in readers:
            await open_stream(port, body, reader)
        await asyncio.wait_for(asyncio.gather(*(r.done for r in readers)), 60)
        received += sum(r.progress.tokens for r in readers)
    return received


def measure(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    with redis_server() as (redis_url, _):  # REDIS_URL, else a private redis-server
        upstream = start_python("upstream", "bench.upstream", ["--ping", "2.0"])
        try:
            wait_port(upstream.port, upstream.proc)
            os.environ.update(_gateway_env(Sizes(), upstream, redis_url))
            gateway = GatewayThread(free_port())
            wait_port(gateway.port, None)

            def run(n: int) -> int:
                return uvloop.run(_starts(gateway.port, n, args.tokens, args.wave, args.tps))

            run(args.warm)
            cpu0 = gateway.cpu()
            tokens = run(args.starts)
            cpu_s = gateway.cpu() - cpu0
            profile = cProfile.Profile()
            gateway.call(profile.enable)
            tokens += run(args.starts)
            gateway.call(profile.disable)
            gateway.stop()
        finally:
            upstream.stop()
    stats = pstats.Stats(profile)
    calls = int(getattr(stats, "total_calls", 0))
    out = {
        "starts": args.starts,
        "tokens": tokens,
        "expected_tokens": 2 * args.starts * args.tokens,
        "cpu_us_per_start": round(cpu_s * 1e6 / args.starts, 1),
        "calls_per_start": round(calls / args.starts, 1),
    }
    if args.dump:
        stats.dump_stats(args.dump)
    if args.top:
        stats.sort_stats(args.sort).print_stats(args.top)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startprof", description=__doc__)
    parser.add_argument("--starts", type=int, default=200, help="starts measured (each pass)")
    parser.add_argument("--tokens", type=int, default=5, help="tokens per start")
    parser.add_argument("--wave", type=int, default=20, help="starts sent at once")
    parser.add_argument("--tps", type=float, default=50.0, help="tokens/s of each stream")
    parser.add_argument("--warm", type=int, default=40, help="starts before measuring")
    parser.add_argument("--top", type=int, default=0, help="print the top functions")
    parser.add_argument("--sort", default="tottime", help="pstats sort key for --top")
    parser.add_argument("--dump", default="", help="write the profile to this file (pstats)")
    out = measure(parser.parse_args(argv))
    print(" ".join(f"{k}={v}" for k, v in out.items()), flush=True)
    return 0 if out["tokens"] == out["expected_tokens"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
