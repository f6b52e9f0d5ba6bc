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

from gateway.protocol import AgentRequest, TaskStatus
from gateway.protocol.numbers import MAX_DIGITS

__all__ = ["build_openapi", "install_openapi"]

_REF = "#/components/schemas/{model}"
_JSON = "application/json"
_SSE = "text/event-stream"
_DELIVERY_TIMES = ("lastStatus", "lastAttemptAt", "deliveredAt", "nextAttemptAt")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}, **extra}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return _json(_ref("Error"), description, **extra)


_RETRY_AFTER = {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}}
_COMMON_ERRORS = {
    "401": _error(
        "missing or unknown API key (when API_KEYS is set)",
        headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "413": _error("body too large"),
    "414": _error("URL too long"),
    "429": _error(
        "rate limited (rate_limited), queue full (queue_full), or too many wrong API keys from "
        "this address (too_many_failed_auth)",
        headers=_RETRY_AFTER,
    ),
    "431": _error("headers too large"),
    "503": _error(
        "the task store (Redis) is unreachable (store_unavailable)", headers=_RETRY_AFTER
    ),
}
_TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"},
}
_FILE_NAME = {
    "name": "file_name",
    "in": "path",
    "required": True,
    "description": "one plain file name (no '/', '\\', control characters or leading '.'), "
    "at most 255 bytes of UTF-8; anything else is a 400",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": r"^[^./\\\u0000-\u001f\u007f][^/\\\u0000-\u001f\u007f]*$",
    },
}
_FILE_ERRORS = {
    "400": _error("not one plain file name"),
    "404": _error("unknown or expired task, or no such file"),
    "502": _error("the tool service could not give the file (upstream_error)"),
    "504": _error("the tool service did not answer in time (timeout)"),
    **_COMMON_ERRORS,
}
_SSE_STREAM = {
    "description": "the task's log as Server-Sent Events (`id: <seq>`, `data: <Message>`)",
    "content": {_SSE: {"schema": {"type": "string"}}},
}


def _schemas() -> dict[str, Any]:
    request = AgentRequest.model_json_schema(by_alias=True, ref_template=_REF)
    defs = request.pop("$defs", {})
    status = {"type": "string", "enum": [s.value for s in TaskStatus]}
    task_error = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    }
    links = {
        "type": "object",
        "required": ["self", "events", "cancel"],
        "properties": {k: {"type": "string"} for k in ("self", "events", "cancel")},
    }
    message = {
        "type": "object",
        "description": "a message of the log (DESIGN §3); its payload field is named by its type",
        "required": ["seq", "taskId", "messageId", "messageType", "messageTime", "finish"],
        "properties": {
            "seq": {"type": "integer", "minimum": 1},
            "taskId": {"type": "string"},
            "requestId": {"type": "string"},
            "messageId": {"type": "string"},
            "messageType": {"type": "string"},
            "messageTime": {"type": "integer"},
            "isFinal": {"type": "boolean"},
            "finish": {"type": "boolean"},
        },
    }
    snapshot = {
        "type": "object",
        "required": ["taskId", "requestId", "agentType", "status", "createdAt", "lastSeq", "links"],
        "properties": {
            "taskId": {"type": "string"},
            "requestId": {"type": "string"},
            "agentType": {"type": "integer"},
            "status": _ref("TaskStatus"),
            "createdAt": {"type": "integer"},
            "startedAt": _nullable({"type": "integer"}),
            "endedAt": _nullable({"type": "integer"}),
            "error": _nullable(_ref("TaskError")),
            "lastSeq": {"type": "integer", "minimum": 0},
            "result": _nullable({"type": "string"}),
            "links": _ref("Links"),
            "messages": {"type": "array", "items": _ref("Message")},
            "nextAfter": {"type": "integer", "minimum": 0},
        },
    }
    attempt = {
        "type": "object",
        "required": ["at", "status", "error"],
        "properties": {"at": {"type": "integer"}, "status": _nullable({"type": "integer"})}
        | {"error": _nullable({"type": "string"})},
    }
    delivery = {
        "type": "object",
        "required": ["taskId", "callbackUrl", "status", "attempts"],
        "properties": {
            "taskId": {"type": "string"},
            "callbackUrl": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            "attempts": {"type": "integer", "minimum": 0},
            **{n: _nullable({"type": "integer"}) for n in _DELIVERY_TIMES},
            "lastError": _nullable({"type": "string"}),
            "webhookId": _nullable({"type": "string"}),
            "history": {"type": "array", "items": attempt},  # the last 20, oldest first
        },
    }
    return {
        **defs,
        "AgentRequest": request,
        "TaskStatus": status,
        "TaskError": task_error,
        "Links": links,
        "Message": message,
        "TaskSnapshot": snapshot,
        "TaskAccepted": {
            "type": "object",
            "required": ["taskId", "status", "links"],
            "properties": {"taskId": {"type": "string"}, "status": status, "links": _ref("Links")},
        },
        "TaskPage": {
            "type": "object",
            "required": ["tasks", "nextCursor"],
            "properties": {
                "tasks": {"type": "array", "items": _ref("TaskSnapshot")},
                "nextCursor": _nullable({"type": "string"}),
            },
        },
        "TaskBatch": {
            "type": "object",
            "required": ["tasks", "missing"],
            "properties": {
                "tasks": {"type": "array", "items": _ref("TaskSnapshot")},
                "missing": {"type": "array", "items": {"type": "string"}},
            },
        },
        "WebhookDelivery": delivery,
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": task_error},
        },
    }


def _paths() -> dict[str, Any]:
    cursor = {"type": "string", "pattern": f"^[0-9]{{1,{MAX_DIGITS}}}$"}
    after = {"type": "integer", "minimum": 0, "maximum": 10**MAX_DIGITS - 1}
    return {
        "/api/tasks": {
            "post": {
                "operationId": "createTask",
                "summary": "Submit a task (202); with Accept: text/event-stream, stream it",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "description": (
                            "the same key with the same body returns the same task, never a"
                            " second run; keys are scoped to the caller's API key"
                        ),
                        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("AgentRequest")}},
                },
                "responses": {
                    "202": _json(
                        _ref("TaskAccepted"),
                        "accepted",
                        headers={"Location": {"schema": {"type": "string"}}},
                    ),
                    "200": {
                        **_SSE_STREAM,
                        "headers": {"X-Task-Id": {"schema": {"type": "string"}}},
                    },
                    "400": _error("malformed JSON or Idempotency-Key"),
                    "415": _error(
                        "the body is not declared as JSON: Content-Type must be "
                        "application/json or application/*+json (unsupported_media_type)"
                    ),
                    "422": _error(
                        "the body is not a valid AgentRequest or its callbackUrl is not one the"
                        " gateway will call (invalid_request), or the Idempotency-Key was used"
                        " for a different body (idempotency_key_reused)"
                    ),
                    **_COMMON_ERRORS,
                },
            },
            "get": {
                "operationId": "listTasks",
                "summary": "Batch status (?ids=a,b) or a page of tasks, newest first",
                "parameters": [
                    {
                        "name": "ids",
                        "in": "query",
                        "description": "comma-separated task ids (1 to 200)",
                        "schema": {"type": "string", "pattern": "[^,]"},
                    },
                    {"name": "status", "in": "query", "schema": _ref("TaskStatus")},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json({"oneOf": [_ref("TaskPage"), _ref("TaskBatch")]}, "tasks"),
                    "400": _error("bad parameter or cursor"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}": {
            "get": {
                "operationId": "getTask",
                "summary": "The snapshot; with ?after=N also the messages after N (polling)",
                "parameters": [
                    _TASK_ID,
                    {"name": "after", "in": "query", "schema": after},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": {
                    "200": _json(_ref("TaskSnapshot"), "the snapshot", headers=_RETRY_AFTER),
                    "400": _error("bad cursor"),
                    "404": _error("unknown or expired task"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}/events": {
            "get": {
                "operationId": "taskEvents",
                "summary": "Replay after the cursor, then tail, as SSE; ends after `finish`",
                "parameters": [
                    _TASK_ID,
                    {"name": "Last-Event-ID", "in": "header", "schema": cursor},
                    {"name": "after", "in": "query", "schema": after},
                ],
                "responses": {
                    "200": _SSE_STREAM,
                    "204": {"description": "a finished task with nothing after the cursor"},
                    "400": _error("cursor beyond the log (invalid_cursor)"),
                    "404": _error("unknown or expired task"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}/cancel": {
            "post": {
                "operationId": "cancelTask",
                "summary": "Cancel (idempotent); answers the final snapshot once confirmed",
                "parameters": [_TASK_ID],
                "responses": {
                    "200": _json(_ref("TaskSnapshot"), "the task has ended"),
                    "202": _json(_ref("TaskSnapshot"), "the stop is not confirmed yet"),
                    "404": _error("unknown or expired task"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}/webhook": {
            "get": {
                "operationId": "taskWebhook",
                "summary": "The task's webhook delivery: its attempts and the next one (outbox)",
                "parameters": [_TASK_ID],
                "responses": {
                    "200": _json(_ref("WebhookDelivery"), "the delivery record"),
                    "404": _error("unknown task, or one without a callbackUrl"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}/files/{file_name}": {
            "get": {
                "operationId": "taskFile",
                "summary": "A file the task's tools wrote, as an attachment (streamed)",
                "parameters": [_TASK_ID, _FILE_NAME],
                "responses": {
                    "200": {
                        "description": "the file (Content-Disposition: attachment)",
                        "content": {"*/*": {"schema": {}}},
                    },
                    **_FILE_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}/preview/{file_name}": {
            "get": {
                "operationId": "taskFilePreview",
                "summary": "The file inline: plain text and images; HTML and SVG under a CSP "
                "sandbox; other types as an attachment",
                "parameters": [_TASK_ID, _FILE_NAME],
                "responses": {
                    "200": {"description": "the file", "content": {"*/*": {"schema": {}}}},
                    **_FILE_ERRORS,
                },
            },
        },
        "/healthz": {"get": _health("liveness")},
        "/readyz": {"get": _health("readiness (the store answers)", unavailable=True)},
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {
                    "200": {"description": "", "content": {"text/plain": {"schema": {}}}}
                },
            },
        },
    }


def _health(summary: str, unavailable: bool = False) -> dict[str, Any]:
    ok = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    }
    responses = {"200": _json(ok, summary)}
    if unavailable:
        responses["503"] = _error("the store is unreachable")
    name = summary.split(" ", 1)[0]
    return {"operationId": name, "summary": summary, "security": [], "responses": responses}


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
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
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
