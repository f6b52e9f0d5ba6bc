"""The OpenAPI 3.1 document of the native API, served at ``/openapi.json``.

Written by hand next to the routes it describes (DESIGN §4), except the request body, which is
the JSON Schema pydantic derives from ``AgentRequest``, so validation and document cannot
drift. SSE answers are ``text/event-stream`` strings; every error is the ``Error`` schema.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.openapi._paths import paths
from gateway.openapi._schemas import schemas

__all__ = ["build_openapi", "install_openapi"]


@functools.cache
def build_openapi() -> dict[str, Any]:
    """The document (built once; treat it as read-only)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Agent Stream Gateway",
            "version": "0.1.0",
            "description": "Runs agents as durable tasks and streams their log over SSE.",
        },
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"apiKey": []}],
    }


@functools.cache
def _encoded() -> bytes:
    return orjson.dumps(build_openapi())


async def openapi_json(request: Request) -> Response:
    """``GET /openapi.json``."""
    return Response(_encoded(), media_type="application/json")


def install_openapi(app: Starlette) -> None:
    """Serve the document at ``/openapi.json`` (idempotent; before the app starts)."""
    if any(getattr(r, "path", None) == "/openapi.json" for r in app.router.routes):
        return
    app.router.routes.append(Route("/openapi.json", openapi_json, methods=["GET"]))
