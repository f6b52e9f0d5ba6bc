"""The ``agent-gateway`` command line.

``serve <service>`` runs one service under uvicorn; ``dev`` runs the whole system on one machine;
``run "query"`` submits a task and follows it live in the terminal.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Sequence

from gateway.devserver import DEV_ORDER, SERVICES, DevConfig, run_dev


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    spec = SERVICES[args.service]
    host = args.host or os.environ.get("HOST", "127.0.0.1")
    port = args.port or int(os.environ.get("PORT", spec.port))
    if args.service == "gateway":
        return _serve_gateway(host, port, args.workers, args.log_level)
    if args.workers != 1:
        print(f"agent-gateway serve {args.service}: --workers is the gateway's", file=sys.stderr)
        return 2
    uvicorn.run(
        spec.factory,
        factory=True,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level=args.log_level,
        timeout_graceful_shutdown=10,
    )
    return 0


def _serve_gateway(host: str, port: int, workers: int, log_level: str) -> int:
    from gateway.server import serve_gateway

    if workers == 1:
        serve_gateway(host, port, log_level)  # drains its streams on SIGTERM
        return 0
    from gateway.settings import Settings
    from gateway.workers import bind_sockets, run_workers

    if not Settings.from_env().redis_url:
        print(
            f"agent-gateway serve gateway: --workers {workers} needs REDIS_URL: the embedded "
            "store lives in one process, so its workers would not see each other's tasks",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=log_level.upper(), format="%(levelname)-9s %(message)s")
    sockets = bind_sockets(host, port, workers)
    logging.getLogger("gateway.workers").info(
        "listening on %s:%d with %d workers", host, sockets[0].getsockname()[1], workers
    )
    return run_workers(functools.partial(serve_gateway, host, port, log_level), sockets)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, got {value}")
    return value


def _dev(args: argparse.Namespace) -> int:
    ports: dict[str, int] = {}
    for offset, name in enumerate(DEV_ORDER_BY_OFFSET):
        explicit = getattr(args, f"{name}_port")
        base = args.base_port + offset if args.base_port else SERVICES[name].port
        ports[name] = explicit or base
    if len(set(ports.values())) != len(ports):
        print(f"agent-gateway dev: two services on one port: {ports}", file=sys.stderr)
        return 2
    config = DevConfig(
        host=args.host,
        ports={name: ports[name] for name in DEV_ORDER},
        startup_timeout=args.startup_timeout,
        log_level=args.log_level,
    )
    return run_dev(config)


def _run(args: argparse.Namespace) -> int:
    from gateway.client import RunOptions, run_task

    options = RunOptions(
        query=args.query,
        gateway=args.gateway,
        agent_type=args.agent_type,
        json=args.json,
        max_retries=args.max_retries,
    )
    return run_task(options)


#: ``dev --base-port N`` puts service i of this order on port N + i.
DEV_ORDER_BY_OFFSET = ("gateway", "tool_service", "mcp_client", "llm_stub", "frontend_stub")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``agent-gateway``."""
    parser = argparse.ArgumentParser(prog="agent-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one service under uvicorn")
    serve.add_argument("service", choices=sorted(SERVICES))
    serve.add_argument("--host", default=None, help="bind address (env HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (env PORT, else per service)")
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="gateway only: N processes on the one port (needs REDIS_URL); default 1",
    )
    serve.set_defaults(func=_serve)

    dev = sub.add_parser(
        "dev",
        help="run every service on this machine (embedded store unless REDIS_URL is set)",
        description="Start gateway, tool_service, mcp_client, llm_stub and frontend_stub as "
        "child processes wired together; Ctrl-C stops them all.",
    )
    dev.add_argument("--host", default="127.0.0.1", help="bind address of every service")
    dev.add_argument(
        "--base-port",
        type=int,
        default=0,
        help="put gateway, tool_service, mcp_client, llm_stub, frontend_stub on "
        "BASE, BASE+1, ... BASE+4 (default: 8080, 1601, 8188, 8000, 3000)",
    )
    for name in DEV_ORDER_BY_OFFSET:
        flag = "--" + ("frontend" if name == "frontend_stub" else name).replace("_", "-") + "-port"
        dev.add_argument(flag, dest=f"{name}_port", type=int, default=0, help=f"port of {name}")
    dev.add_argument("--startup-timeout", type=float, default=60.0, help="seconds to get healthy")
    dev.add_argument("--log-level", default="info")
    dev.set_defaults(func=_dev)

    run = sub.add_parser(
        "run",
        help="submit a task and follow it live in the terminal",
        description="Stream a task's plan, tool work and answer; resumes after a dropped "
        "connection. Exit status: 0 COMPLETED, 1 FAILED, 3 CANCELLED, 4 refused or unreachable, "
        "130 interrupted (the task is cancelled).",
    )
    run.add_argument("query", help="what to ask the agent")
    run.add_argument(
        "--agent-type",
        type=int,
        default=None,
        help="0 echo, 3 plan-and-execute, 5 ReAct (default: the gateway's, 3)",
    )
    run.add_argument(
        "--gateway",
        default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080"),
        help="gateway base URL (env GATEWAY_URL, default http://127.0.0.1:8080)",
    )
    run.add_argument("--json", action="store_true", help="print each message as one JSON line")
    run.add_argument(
        "--max-retries", type=int, default=8, help="reconnects in a row before giving up"
    )
    run.set_defaults(func=_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agent-gateway`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
