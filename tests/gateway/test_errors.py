"""The gateway's one error root and its one error answer (``gateway.errors``)."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.client import RequestRefused
from gateway.devserver import DevFailure
from gateway.errors import GatewayError
from gateway.routes.errors import EXCEPTION_HANDLERS, ApiError
from gateway.settings import SettingsError
from gateway.ssrf import TargetRefused
from gateway.store import (
    IdempotencyKeyReused,
    IllegalTransition,
    StoreUnavailable,
    TaskEnded,
    TaskNotFound,
)
from gateway.tasks import QueueFull, TaskFailure, UnknownAgentType

ANSWERED = [
    (TaskNotFound("gone"), 404, "not_found"),
    (IdempotencyKeyReused("other body"), 422, "idempotency_key_reused"),
    (TaskEnded("ended"), 409, "task_ended"),
    (IllegalTransition("no"), 409, "illegal_transition"),
    (QueueFull(retry_after=2), 429, "queue_full"),
    (UnknownAgentType("agentType 9 is unknown"), 422, "invalid_request"),
    (TargetRefused("not public"), 422, "invalid_request"),
    (ApiError(418, "teapot", "short and stout"), 418, "teapot"),
]


@pytest.mark.parametrize(
    "error",
    [
        *(error for error, _, _ in ANSWERED),
        StoreUnavailable("down"),
        TaskFailure("timeout", "too slow"),
        SettingsError("PORT must be a number"),
        RequestRefused("400"),
        DevFailure("llm_stub died twice"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_gateway_error_has_the_one_root_with_a_code_and_a_status(
    error: GatewayError,
) -> None:
    assert isinstance(error, GatewayError)
    assert isinstance(error.code, str) and error.code
    assert 400 <= error.status_code <= 599


def test_settings_and_agent_type_errors_stay_value_errors() -> None:
    assert isinstance(SettingsError("x"), ValueError)
    assert isinstance(UnknownAgentType("x"), ValueError)


@pytest.mark.parametrize(("error", "status", "code"), ANSWERED, ids=lambda v: type(v).__name__)
def test_a_gateway_error_that_reaches_the_app_answers_its_own_status_and_code(
    error: GatewayError, status: int, code: str
) -> None:
    async def fail(request: Request) -> Response:
        raise error

    app = Starlette(routes=[Route("/", fail)], exception_handlers=EXCEPTION_HANDLERS)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/")
    assert response.status_code == status
    assert response.json() == {"error": {"code": code, "message": str(error)}}


def test_a_gateway_error_of_status_500_answers_internal_without_its_detail() -> None:
    async def fail(request: Request) -> Response:
        raise TaskFailure("internal", "secret detail")

    app = Starlette(routes=[Route("/", fail)], exception_handlers=EXCEPTION_HANDLERS)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal server error"}}
