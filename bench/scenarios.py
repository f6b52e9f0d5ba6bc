"""The five scenarios of issue 7, each run against the direct upstream, the gateway and the naive
relay side by side. Each returns a JSON-able dict; ``bench.report`` turns them into a table."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any

import orjson

from bench.client import Progress, Request, SSEReader, open_stream, post_json, simple_request
from bench.procs import Child, self_cpu_seconds
from bench.stats import rnd, summary_ms
from bench.targets import Target, react_target


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is (the full run, or the CI smoke)."""

    relay_levels: tuple[int, ...] = (1, 200, 500)
    relay_tokens: tuple[int, ...] = (3, 200, 250)
    relay_rounds: tuple[int, ...] = (100, 1, 1)  # one after another (100 TTFTs at 1 stream)
    relay_paths: tuple[str, ...] = ("direct", "gateway", "react", "naive")
    react_levels: tuple[int, ...] = (1, 200)  # the levels that also run the ReAct agent
    naive_levels: tuple[int, ...] = (1, 200)  # the naive relay (at 500 it only falls behind)
    tps: float = 50.0
    ramp: float = 1.0
    idle_conns: int = 10_000
    idle_naive_conns: int = 2_000  # the naive relay's RSS per connection needs fewer
    idle_ping: float = 2.0
    idle_window: float = 4.5  # any 4 s window holds two pings of each connection
    fanout_readers: int = 1000
    fanout_naive_readers: int = 200  # the naive relay falls behind long before 1,000
    fanout_tokens: int = 300
    fanout_tps: float = 100.0
    mirror_streams: int = 200
    mirror_tokens: int = 100
    mirror_pairs: int = 3  # alternate runs of each store (the median run counts)
    resume_clients: int = 100
    resume_tokens: int = 100
    resume_drop: int = 50
    resume_pause: float = 0.2  # offline before reconnecting: 10 tokens to replay at 50 tok/s
    herd_tasks: int = 100
    herd_per_task: int = 10
    start_levels: tuple[int, ...] = (200, 500)  # f: task starts within one second
    start_tokens: int = 5  # each start streams a few tokens
    start_runs: int = 3  # runs of the gateway (the median run by TTFT p99 counts) after one
    # of the direct upstream
    max_running: int = 520  # gateway slots: at least the streams running at once
    margin: float = 1.0  # seconds of slack on waits for streams that may never end
    settle: bool = True  # wait for quiet servers between runs (off in the smoke)
    pause: float = 0.25  # seconds between steps (let connections close, memory settle)


SMOKE = Sizes(
    relay_levels=(1, 5),
    relay_tokens=(20, 20),
    relay_rounds=(2, 1),
    react_levels=(1, 5),
    naive_levels=(1, 5),
    tps=200.0,
    ramp=0.05,
    idle_conns=30,
    idle_naive_conns=30,
    idle_ping=0.15,
    idle_window=0.5,
    fanout_readers=10,
    fanout_naive_readers=10,
    fanout_tokens=30,
    fanout_tps=200.0,
    mirror_streams=4,
    mirror_tokens=20,
    mirror_pairs=1,
    resume_clients=4,
    resume_tokens=30,
    resume_drop=10,
    resume_pause=0.05,
    herd_tasks=2,
    herd_per_task=3,
    start_levels=(5,),
    start_runs=1,
    max_running=16,
    margin=0.3,
    settle=False,
    pause=0.05,
)


@dataclass
class World:
    """The running processes."""

    targets: dict[str, Target]
    upstream: Child
    gateway_memory: Target
    redis: Child | None
    sizes: Sizes
    redis_url: str = ""  # the gateway's Redis (f reads its counters)


class Meter:
    """CPU seconds of the charged process, the upstream, Redis and this client over a window."""

    def __init__(self, world: World, target: Target) -> None:
        self.procs = {"server": target.child, "upstream": world.upstream}
        if world.redis is not None:
            self.procs["redis"] = world.redis
        self.start = {k: p.cpu() for k, p in self.procs.items()}
        self.client0 = self_cpu_seconds()
        self.wall0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        out = {k: p.cpu() - self.start[k] for k, p in self.procs.items()}
        out["client"] = self_cpu_seconds() - self.client0
        out["wall"] = time.monotonic() - self.wall0
        return {k: round(v, 3) for k, v in out.items()}


def query(tokens: int, tps: float, ttft_ms: float = 0.0) -> str:
    return f"n={tokens} tps={tps:g} ttft={ttft_ms:g}"


async def _gather_done(readers: list[SSEReader], timeout: float) -> int:
    """Wait for every reader to end; returns how many did not in time (those are closed)."""
    pending = [r.done for r in readers if not r.done.done()]
    if not pending:
        return 0
    _, still = await asyncio.wait(pending, timeout=timeout)
    for r in readers:
        if r.transport is not None and not r.done.done():
            r.transport.close()
    return len(still)


async def settle(world: World, limit: float = 15.0) -> None:
    """Wait until the servers are quiet (< 5% CPU over 200 ms), so runs do not overlap."""
    if not world.sizes.settle:
        return
    procs = [t.child for t in world.targets.values()] + [world.gateway_memory.child]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = [p.cpu() for p in procs]
        await asyncio.sleep(0.2)
        if all(p.cpu() - b < 0.01 for p, b in zip(procs, before, strict=True)):
            return


async def warm_up(world: World, rounds: int = 5) -> None:
    """A few short streams through each target, one after another (connections, caches,
    script loading, the first run of every code path), so the first measured stream is not
    the process's first."""
    targets = [*world.targets.values(), world.gateway_memory]
    for _ in range(rounds):
        readers = [SSEReader(t.marker, crlf=t.crlf) for t in targets]
        for t, r in zip(targets, readers, strict=True):
            await open_stream(t.port, t.stream(query(5, 500)), r)
        await _gather_done(readers, timeout=10)


def _integrity(progresses: list[Progress], readers_finished: int) -> dict[str, int]:
    return {
        "gaps": sum(p.gaps for p in progresses),
        "duplicates": sum(p.dups for p in progresses),
        "finished": readers_finished,
        "streams": len(progresses),
    }


# -- a. relay (and the ReAct agent answering without a tool) -----------------------------------
async def run_streams(
    world: World,
    target: Target,
    n: int,
    tokens: int,
    rounds: int = 1,
    readers: list[SSEReader] | None = None,
) -> dict[str, Any]:
    """``n`` concurrent relayed completions of ``tokens`` tokens, started over the ramp;
    ``rounds`` times, each round once the previous one has ended. The readers are left in
    ``readers`` if given."""
    sizes = world.sizes
    ramp = sizes.ramp if n > 1 else 0.0
    q = query(tokens, sizes.tps)
    if readers is None:
        readers = []
    readers[:] = [SSEReader(target.marker, crlf=target.crlf) for _ in range(n * rounds)]
    await settle(world)
    meter = Meter(world, target)
    stuck = 0
    for first in range(0, len(readers), n):
        t0 = time.monotonic()

        async def start(i: int, reader: SSEReader, t0: float = t0) -> None:
            delay = t0 + ramp * i / max(1, n) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await open_stream(target.port, target.stream(q), reader)

        batch = readers[first : first + n]
        await asyncio.gather(*(start(i, r) for i, r in enumerate(batch)))
        expected = ramp + tokens / sizes.tps
        stuck += await _gather_done(batch, timeout=expected * 2 + 5)
    cpu = meter.stop()
    total_tokens = sum(r.progress.tokens for r in readers)
    lags = [lag for r in readers for lag in r.lags]
    ttfts = [t for r in readers if (t := r.added_ttft_ns()) is not None]
    return {
        "streams": n,
        "rounds": rounds,
        "tokens": total_tokens,
        "expected_tokens": n * tokens * rounds,
        "added_ttft_ms": summary_ms(ttfts),
        "token_lag_ms": summary_ms(lags),
        "server_cpu_us_per_token": rnd(
            cpu["server"] * 1e6 / total_tokens if total_tokens else None
        ),
        "cpu_s": cpu,
        "stuck": stuck,
        **_integrity([r.progress for r in readers], sum(r.finished for r in readers)),
    }


async def relay(world: World) -> dict[str, Any]:
    sizes = world.sizes
    out: dict[str, Any] = {}
    levels = zip(sizes.relay_levels, sizes.relay_tokens, sizes.relay_rounds, strict=True)
    for n, tokens, rounds in levels:
        level: dict[str, Any] = {}
        for name in sizes.relay_paths:
            if (name == "react" and n not in sizes.react_levels) or (
                name == "naive" and n not in sizes.naive_levels
            ):
                continue
            target = react_target(world.targets["gateway"]) if name == "react" else None
            target = target or world.targets[name]
            level[name] = await run_streams(world, target, n, tokens, rounds)
            await asyncio.sleep(world.sizes.pause)
        g, v = level.get("gateway"), level.get("naive")
        if g and v and g["server_cpu_us_per_token"] and v["server_cpu_us_per_token"]:
            level["naive_over_gateway_cpu"] = rnd(
                v["server_cpu_us_per_token"] / g["server_cpu_us_per_token"]
            )
        out[str(n)] = level
    return out


# -- d. mirroring -----------------------------------------------------------------------------
async def mirroring(world: World) -> dict[str, Any]:
    """(a) at ``mirror_streams`` on the Redis-store gateway and on the memory-store one, in
    alternate runs (``mirror_pairs`` of each), so a machine whose speed drifts slows both alike;
    each store's figure is its median run."""
    sizes = world.sizes
    n, tokens = sizes.mirror_streams, sizes.mirror_tokens
    runs: dict[str, list[dict[str, Any]]] = {"redis": [], "memory": []}
    for _ in range(sizes.mirror_pairs):
        for store, target in (
            ("redis", world.targets["gateway"]),
            ("memory", world.gateway_memory),
        ):
            runs[store].append(await run_streams(world, target, n, tokens))
            await asyncio.sleep(world.sizes.pause)

    def median_run(store: str) -> dict[str, Any]:
        ordered = sorted(runs[store], key=lambda r: r["server_cpu_us_per_token"] or 0.0)
        return ordered[(len(ordered) - 1) // 2]

    redis_run, memory_run = median_run("redis"), median_run("memory")
    r, m = redis_run["server_cpu_us_per_token"], memory_run["server_cpu_us_per_token"]
    return {
        "streams": n,
        "redis": redis_run,
        "memory": memory_run,
        "redis_runs_us_per_token": [run["server_cpu_us_per_token"] for run in runs["redis"]],
        "memory_runs_us_per_token": [run["server_cpu_us_per_token"] for run in runs["memory"]],
        "redis_over_memory_cpu": rnd(r / m if r and m else None),
    }


# -- b. idle capacity -------------------------------------------------------------------------
async def _connect_many(port: int, requests: list[Request], readers: list[SSEReader]) -> None:
    """Open many streams in batches, each batch answered before the next (bounded backlog)."""
    batch = 500
    for i in range(0, len(readers), batch):
        part = readers[i : i + batch]
        await asyncio.gather(
            *(open_stream(port, q, r) for q, r in zip(requests[i : i + batch], part, strict=True))
        )
        await asyncio.wait([asyncio.ensure_future(r.answered.wait()) for r in part], timeout=10)


async def idle_one(world: World, target: Target, conns: int) -> dict[str, Any]:
    sizes = world.sizes
    task_id = None
    if target.name == "gateway":
        _, body = await simple_request(
            target.port, post_json("/api/tasks", {"query": query(1, 1, 600_000), "agentType": 1})
        )
        task_id = orjson.loads(body)["taskId"]
        await _wait_status(target, task_id, {"RUNNING"})
        requests = [target.attach(task_id, 1) for _ in range(conns)]
    else:
        requests = [target.idle() for _ in range(conns)]
    readers = [SSEReader(target.marker, crlf=target.crlf, record_lags=False) for _ in range(conns)]
    await asyncio.sleep(world.sizes.pause)
    await settle(world)
    rss0 = target.child.rss()
    t_connect = time.monotonic()
    await _connect_many(target.port, requests, readers)
    connect_s = time.monotonic() - t_connect
    await asyncio.sleep(world.sizes.pause)
    rss1 = target.child.rss()
    ok = sum(1 for r in readers if r.status == 200 and not r.done.done())
    meter = Meter(world, target)
    start_ns = time.monotonic_ns()
    await asyncio.sleep(sizes.idle_window)
    cpu = meter.stop()
    late: list[int] = []
    pinged = 0
    interval_ns = int(sizes.idle_ping * 1e9)
    for r in readers:
        pings = [p for p in r.pings if p >= start_ns]
        if len(pings) >= 2:
            pinged += 1
        late.extend(max(0, b - a - interval_ns) for a, b in itertools.pairwise(pings))
    for r in readers:
        if r.transport is not None:
            r.transport.close()
    if task_id is not None:
        await simple_request(target.port, Request("POST", f"/api/tasks/{task_id}/cancel"))
    await asyncio.sleep(world.sizes.pause)
    return {
        "connections": conns,
        "open": ok,
        "connect_s": round(connect_s, 2),
        "rss_per_conn_kb": rnd((rss1 - rss0) / max(1, ok) / 1024),
        "heartbeat_interval_s": sizes.idle_ping,
        "conns_with_2_pings": pinged,
        "heartbeat_late_ms": summary_ms(late),
        "idle_cpu_pct": rnd(100 * cpu["server"] / cpu["wall"]),
        "cpu_s": cpu,
    }


async def idle(world: World) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sizes = world.sizes
    for name in ("direct", "gateway", "naive"):
        conns = sizes.idle_naive_conns if name == "naive" else sizes.idle_conns
        out[name] = await idle_one(world, world.targets[name], conns)
    return out


async def _wait_status(target: Target, task_id: str, wanted: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = await simple_request(target.port, Request("GET", f"/api/tasks/{task_id}"))
        if status == 200 and orjson.loads(body)["status"] in wanted:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"task {task_id} never reached {wanted}")


# -- c. fan-out -------------------------------------------------------------------------------
async def fanout_one(world: World, target: Target) -> dict[str, Any]:
    sizes = world.sizes
    n = sizes.fanout_naive_readers if target.name == "naive" else sizes.fanout_readers
    q = query(sizes.fanout_tokens, sizes.fanout_tps, 1500 if n > 50 else 300)
    await settle(world)
    meter = Meter(world, target)
    first = SSEReader(target.marker, crlf=target.crlf)
    await open_stream(target.port, target.stream(q), first)
    await first.first_event.wait()  # the task exists and runs
    key = first.key
    readers = [first] + [SSEReader(target.marker, crlf=target.crlf) for _ in range(n - 1)]
    await _connect_many(target.port, [target.attach(key, 0) for _ in readers[1:]], readers[1:])
    stuck = await _gather_done(readers, timeout=sizes.fanout_tokens / sizes.fanout_tps * 2 + 5)
    cpu = meter.stop()
    events = sum(r.progress.events for r in readers)
    lags = [lag for r in readers for lag in r.lags]
    return {
        "readers": n,
        "events": events,
        "events_per_s_wall": rnd(events / cpu["wall"]),
        "events_per_cpu_s": rnd(events / cpu["server"] if cpu["server"] else None, 0),
        "token_lag_ms": summary_ms(lags),
        "cpu_s": cpu,
        "stuck": stuck,
        **_integrity([r.progress for r in readers], sum(r.finished for r in readers)),
    }


async def fanout(world: World) -> dict[str, Any]:
    out: dict[str, Any] = {"direct": "n/a (the upstream has no fan-out)"}
    for name in ("gateway", "naive"):
        out[name] = await fanout_one(world, world.targets[name])
        await asyncio.sleep(world.sizes.pause)
    return out


# -- e. resume --------------------------------------------------------------------------------
async def resume_one(world: World, target: Target) -> dict[str, Any]:
    sizes = world.sizes
    n = sizes.resume_clients
    q = query(sizes.resume_tokens, sizes.tps)
    firsts: list[int] = []
    progresses: list[Progress] = []
    finished = 0
    t0 = time.monotonic()

    async def client(i: int) -> None:
        nonlocal finished
        delay = t0 + sizes.ramp * i / n - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        progress = Progress()
        progresses.append(progress)
        r1 = SSEReader(target.marker, progress, drop_at_token=sizes.resume_drop, crlf=target.crlf)
        await open_stream(target.port, target.stream(q), r1)
        await _gather_done([r1], sizes.resume_tokens / sizes.tps * 3 + 10)
        # Offline for a moment, as after a network cut (EventSource waits its retry time):
        # reconnecting at once would find nothing to replay, and the first event would be the
        # next live token, up to one token interval later.
        await asyncio.sleep(sizes.resume_pause)
        r2 = SSEReader(target.marker, progress, crlf=target.crlf, record_lags=False)
        await open_stream(target.port, target.attach(r1.key, progress.last_id), r2)
        # a relay that died with its client never ends: give up after the stream's own length
        stuck.append(await _gather_done([r2], sizes.resume_tokens / sizes.tps * 1.5 + sizes.margin))
        if r2.first_event_ns:
            firsts.append(r2.first_event_ns - r2.started_ns)
        finished += r2.finished

    stuck: list[int] = []
    await settle(world)
    meter = Meter(world, target)
    await asyncio.gather(*(client(i) for i in range(n)))
    cpu = meter.stop()
    return {
        "clients": n,
        "resumed": len(firsts),
        "stuck": sum(stuck),
        "first_replayed_ms": summary_ms(firsts),
        "cpu_s": cpu,
        **_integrity(progresses, finished),
        "herd": await herd(world, target),
    }


async def herd(world: World, target: Target) -> dict[str, Any]:
    """``herd_tasks`` streams with ``herd_per_task`` readers each drop at the same token, wait
    for the streams to end, then all reconnect at once and replay the rest from the log."""
    sizes = world.sizes
    q = query(sizes.resume_tokens, sizes.tps * 2)
    heads = [
        SSEReader(target.marker, drop_at_token=sizes.resume_drop, crlf=target.crlf)
        for _ in range(sizes.herd_tasks)
    ]
    await asyncio.gather(*(open_stream(target.port, target.stream(q), r) for r in heads))
    for r in heads:
        await r.first_event.wait()
    readers = list(heads)
    for head in heads:
        for _ in range(sizes.herd_per_task - 1):
            r = SSEReader(target.marker, drop_at_token=sizes.resume_drop, crlf=target.crlf)
            r.key = head.key
            readers.append(r)
    extra = readers[len(heads) :]
    await _connect_many(target.port, [target.attach(r.key, 0) for r in extra], extra)
    await _gather_done(readers, timeout=sizes.resume_tokens / sizes.tps * 1.5 + sizes.margin)
    # wait until every stream has ended, so the whole rest is replayed from the log
    await asyncio.sleep(sizes.resume_tokens / (sizes.tps * 2) * 0.6 + sizes.margin)
    again = []
    for r in readers:
        a = SSEReader(target.marker, r.progress, crlf=target.crlf, record_lags=False)
        a.key = r.key
        again.append(a)
    meter = Meter(world, target)
    t_start = time.monotonic_ns()
    await asyncio.gather(
        *(open_stream(target.port, target.attach(a.key, a.progress.last_id), a) for a in again)
    )
    stuck = await _gather_done(again, timeout=sizes.resume_tokens / sizes.tps + sizes.margin)
    cpu = meter.stop()
    firsts = [a.first_event_ns - t_start for a in again if a.first_event_ns]
    ended = [a for a in again if a.finished]
    done_all_s = (
        (max(a.done_ns for a in ended) - t_start) / 1e9 if len(ended) == len(again) else None
    )
    return {
        "readers": len(again),
        "first_replayed_ms": summary_ms(firsts),
        "replayed": len(firsts),
        "all_replayed_s": rnd(done_all_s, 3),
        "stuck": stuck,
        "cpu_s": cpu,
        **_integrity([a.progress for a in again], sum(a.finished for a in again)),
    }


async def resume(world: World) -> dict[str, Any]:
    out: dict[str, Any] = {"direct": "n/a (the upstream cannot resume)"}
    for name in ("gateway", "naive"):
        out[name] = await resume_one(world, world.targets[name])
        await asyncio.sleep(world.sizes.pause)
    return out


SCENARIOS = {
    "relay": relay,
    "idle": idle,
    "fanout": fanout,
    "mirroring": mirroring,
    "resume": resume,
}
