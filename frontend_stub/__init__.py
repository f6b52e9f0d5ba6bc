"""A zero-build browser page that drives the gateway (POST, SSE with resume, polling, cancel).

It imports nothing from ``gateway``. ``create_app`` is the uvicorn factory; run it with
``agent-gateway serve frontend_stub`` (port 3000).
"""

from frontend_stub.app import FrontendSettings, create_app

__all__ = ["FrontendSettings", "create_app"]
