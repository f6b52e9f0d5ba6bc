"""The gateway's one error root and its one JSON error answer.

Every error the gateway raises on purpose is a :class:`GatewayError`: it carries a stable
``code`` (the ``error.code`` a client sees) and the HTTP ``status_code`` it is answered with
when it reaches a client unhandled. Subclasses set both as class attributes (``TaskNotFound``
is ``not_found`` / 404); an instance may override them (``ApiError`` does, per raise).

:func:`error_response` is the one way an error becomes an answer: the routes return it, the
exception handlers return it, and the ASGI middlewares call it (a Starlette ``Response`` is an
ASGI app), so every refusal has the same ``{"error": {"code", "message"}}`` shape.

This module sits at the bottom of the layers (DESIGN §9): anything in the gateway may import it.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response


class GatewayError(Exception):
    """The root of the gateway's errors: a stable ``code`` and the ``status_code`` it answers."""

    code: str = "internal"
    status_code: int = 500


def error_response(
    status_code: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """A ``{"error": {"code", "message"}}`` JSON answer with ``status_code`` and ``headers``."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Response(body, status_code, headers=headers, media_type="application/json")


__all__ = ["GatewayError", "error_response"]
