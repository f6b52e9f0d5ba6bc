"""The ``agent-gateway`` command line: ``serve <service>`` (and, later, ``dev`` and ``run``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    """Where a service's app factory lives and which port it listens on by default."""

    factory: str
    port: int
    health: str


SERVICES: dict[str, ServiceSpec] = {
    "gateway": ServiceSpec("gateway.app:create_app", 8080, "/healthz"),
    "tool_service": ServiceSpec("tool_service.app:create_app", 1601, "/health"),
    "mcp_client": ServiceSpec("mcp_client.app:create_app", 8188, "/health"),
    "llm_stub": ServiceSpec("llm_stub.app:create_app", 8000, "/health"),
    "frontend_stub": ServiceSpec("frontend_stub.app:create_app", 3000, "/health"),
}


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    spec = SERVICES[args.service]
    host = args.host or os.environ.get("HOST", "127.0.0.1")
    port = args.port or int(os.environ.get("PORT", spec.port))
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``agent-gateway``."""
    parser = argparse.ArgumentParser(prog="agent-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one service under uvicorn")
    serve.add_argument("service", choices=sorted(SERVICES))
    serve.add_argument("--host", default=None, help="bind address (env HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (env PORT, else per service)")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agent-gateway`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
