"""Run the gateway for the bench: uvicorn (uvloop + httptools) with the relay agent.

Equivalent to ``agent-gateway serve gateway`` with ``agentType 1`` registered; settings come from
the environment (``REDIS_URL``, ``MAX_RUNNING`` …) exactly as there. ``--workers N`` runs N
processes on the port as ``serve gateway --workers N`` does (:mod:`gateway.workers`).

    python -m bench.gateway_server --port 8080 [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import socket

import uvicorn
import uvloop

from bench.procs import raise_fd_limit
from gateway.agents import register_builtin_agents
from gateway.agents.echo import make_echo_agent
from gateway.agents.relay import relay_agent
from gateway.app import create_app
from gateway.server import tune_garbage_collector
from gateway.settings import Settings
from gateway.tasks import TaskRegistry
from gateway.workers import bind_sockets, run_workers

RELAY = 1


async def serve(port: int, sock: socket.socket | None = None) -> None:
    settings = dataclasses.replace(Settings.from_env(), port=port)
    registry = TaskRegistry()
    registry.register(0, make_echo_agent(settings.echo_token_delay_ms), name="echo")
    register_builtin_agents(registry)
    registry.register(RELAY, relay_agent, name="relay")
    app = create_app(settings, registry=registry)
    tune_garbage_collector()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="none",  # already on uvloop (below)
        http="httptools",
        log_level="warning",
        backlog=16384,
        timeout_graceful_shutdown=3,
    )
    await uvicorn.Server(config).serve(sockets=None if sock is None else [sock])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    raise_fd_limit()
    if args.workers == 1:
        uvloop.run(serve(args.port))
        return
    sockets = bind_sockets("127.0.0.1", args.port, args.workers, backlog=16384)
    raise SystemExit(run_workers(functools.partial(_worker, args.port), sockets))


def _worker(port: int, sock: socket.socket) -> None:
    uvloop.run(serve(port, sock))


if __name__ == "__main__":
    main()
