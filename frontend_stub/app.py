"""The frontend stub's Starlette app: the page, its ES modules, ``/config.js`` and ``/health``.

The page is plain HTML and JavaScript modules (no bundler, no npm packages). ``/config.js`` tells
it where the gateway is (``GATEWAY_URL``), so the same files work behind any host name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["FrontendSettings", "create_app"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
NO_CACHE = {"Cache-Control": "no-cache"}
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class FrontendSettings:
    """Where the page finds the gateway (``GATEWAY_URL``, default ``http://127.0.0.1:8080``)."""

    gateway_url: str = DEFAULT_GATEWAY_URL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FrontendSettings:
        """Read ``GATEWAY_URL`` from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        url = (env.get("GATEWAY_URL") or "").strip().rstrip("/")
        return cls(gateway_url=url or DEFAULT_GATEWAY_URL)


class _NoStoreStaticFiles(StaticFiles):
    """Static files that the browser revalidates, so an edited module is picked up at once.

    Python files of the folder (its ``__init__.py``) are not served.
    """

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path.endswith((".py", ".pyc")) or "__pycache__" in path:
            raise HTTPException(404)
        return await super().get_response(path, scope)

    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        response.headers["Cache-Control"] = "no-cache"
        return response


def create_app(settings: FrontendSettings | None = None) -> Starlette:
    """Build the app; with no argument the settings are read from the environment."""
    settings = settings or FrontendSettings.from_env()
    # ``</`` is escaped so that no value can close the script element it is served in.
    config = orjson.dumps({"gatewayUrl": settings.gateway_url}).replace(b"</", b"<\\/")
    config_js = b"window.AGW_CONFIG = Object.freeze(" + config + b");\n"

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=NO_CACHE)

    async def config_script(request: Request) -> Response:
        return Response(config_js, media_type="text/javascript", headers=NO_CACHE)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "gatewayUrl": settings.gateway_url})

    return Starlette(
        routes=[
            Route("/", index, methods=["GET", "HEAD"]),
            Route("/config.js", config_script, methods=["GET", "HEAD"]),
            Route("/health", health, methods=["GET"]),
            Mount("/static", _NoStoreStaticFiles(directory=STATIC_DIR), name="static"),
        ]
    )
