"""What every route needs: the app's services, a validated JSON body, the public base URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, cast

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from .errors import InvalidRequest
from .files import FileStore
from .llm import LLMClient
from .sandbox import Sandbox
from .search import SearchEngine
from .settings import Settings

__all__ = ["Services", "read_model", "services_of"]

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class Services:
    """The long-lived objects of one app instance, built in its lifespan."""

    settings: Settings
    files: FileStore
    sandbox: Sandbox
    llm: LLMClient
    engines: tuple[SearchEngine, ...]

    def base_url(self, request: Request) -> str:
        """Where clients reach this service: ``PUBLIC_URL``, else the URL they used."""
        return self.settings.public_url or str(request.base_url).rstrip("/")


def services_of(request: Request) -> Services:
    """The services of the app serving ``request``."""
    return cast(Services, request.app.state.services)


async def read_model(request: Request, model: type[ModelT]) -> ModelT:
    """Parse the JSON body of ``request`` into ``model``, or raise :class:`InvalidRequest`."""
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidRequest(f"{where}: {first['msg']}") from None
