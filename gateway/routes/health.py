"""Liveness, readiness and metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import error_response
from gateway.routes.errors import json_response
from gateway.store import StoreUnavailable


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await request.app.state.store.ping()
    except StoreUnavailable as exc:
        return error_response(503, "store_unavailable", f"the store is unreachable: {exc}")
    return json_response({"status": "ready"})


async def metrics(request: Request) -> Response:
    body = await request.app.state.metrics.render(request.app.state.store)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
