"""HTTP routes of the gateway."""

from gateway.routes import health, tasks
from gateway.routes.errors import EXCEPTION_HANDLERS, ApiError

__all__ = ["EXCEPTION_HANDLERS", "ApiError", "health", "tasks"]
