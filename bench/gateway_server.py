"""Run the gateway for the bench: uvicorn (uvloop + httptools) with the relay agent.

Equivalent to ``agent-gateway serve gateway`` with ``agentType 1`` registered; settings come from
the environment (``REDIS_URL``, ``MAX_RUNNING`` …) exactly as there. ``--workers N`` runs N
processes on the port as ``serve gateway --workers N`` does (:mod:`gateway.workers`).
``--chat-pool N`` gives the relay agent a ChatClient with an injected ``httpx`` client whose
pool allows ``N`` connections; that client only serves ``complete``, the streams take the wire
client all the same (the proxy path too, since issue 21), so this measures the same as the
default, 0.

    python -m bench.gateway_server --port 8080 [--chat-pool 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import socket

import httpx
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
from gateway.tasks.context import Handler, TaskContext
from gateway.upstream import ChatClient
from gateway.workers import bind_sockets, run_workers

RELAY = 1


def _with_chat(chat: ChatClient) -> Handler:
    async def relay_with_client(ctx: TaskContext) -> None:
        await relay_agent(dataclasses.replace(ctx, services={**ctx.services, "chat": chat}))

    return relay_with_client


async def serve(port: int, chat_pool: int, sock: socket.socket | None = None) -> None:
    settings = dataclasses.replace(Settings.from_env(), port=port)
    registry = TaskRegistry()
    registry.register(0, make_echo_agent(settings.echo_token_delay_ms), name="echo")
    register_builtin_agents(registry)
    http: httpx.AsyncClient | None = None
    if chat_pool > 0:
        up = settings.upstream
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(
                up.llm_idle_timeout, connect=up.llm_connect_timeout, pool=up.llm_connect_timeout
            ),
            limits=httpx.Limits(max_connections=chat_pool, max_keepalive_connections=chat_pool),
        )
        registry.register(RELAY, _with_chat(ChatClient(up, http=http)), name="relay")
    else:
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
    try:
        await uvicorn.Server(config).serve(sockets=None if sock is None else [sock])
    finally:
        if http is not None:
            await http.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chat-pool", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    raise_fd_limit()
    if args.workers == 1:
        uvloop.run(serve(args.port, args.chat_pool))
        return
    sockets = bind_sockets("127.0.0.1", args.port, args.workers, backlog=16384)
    raise SystemExit(run_workers(functools.partial(_worker, args.port, args.chat_pool), sockets))


def _worker(port: int, chat_pool: int, sock: socket.socket) -> None:
    uvloop.run(serve(port, chat_pool, sock))


if __name__ == "__main__":
    main()
