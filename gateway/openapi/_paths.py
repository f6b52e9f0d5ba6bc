"""``paths`` of the OpenAPI document: one entry per route of the native API (DESIGN §4)."""

from __future__ import annotations

from typing import Any

from gateway.openapi._parts import (
    COMMON_ERRORS,
    FILE_ERRORS,
    FILE_NAME,
    JSON,
    RETRY_AFTER,
    SSE_STREAM,
    TASK_ID,
    error_answer,
    json_answer,
    ref,
)
from gateway.protocol.numbers import MAX_DIGITS


def paths() -> dict[str, Any]:
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
                    "content": {JSON: {"schema": ref("AgentRequest")}},
                },
                "responses": {
                    "202": json_answer(
                        ref("TaskAccepted"),
                        "accepted",
                        headers={"Location": {"schema": {"type": "string"}}},
                    ),
                    "200": {
                        **SSE_STREAM,
                        "headers": {"X-Task-Id": {"schema": {"type": "string"}}},
                    },
                    "400": error_answer("malformed JSON or Idempotency-Key"),
                    "415": error_answer(
                        "the body is not declared as JSON: Content-Type must be "
                        "application/json or application/*+json (unsupported_media_type)"
                    ),
                    "422": error_answer(
                        "the body is not a valid AgentRequest or its callbackUrl is not one the"
                        " gateway will call (invalid_request), or the Idempotency-Key was used"
                        " for a different body (idempotency_key_reused)"
                    ),
                    **COMMON_ERRORS,
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
                    {"name": "status", "in": "query", "schema": ref("TaskStatus")},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": json_answer({"oneOf": [ref("TaskPage"), ref("TaskBatch")]}, "tasks"),
                    "400": error_answer("bad parameter or cursor"),
                    **COMMON_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}": {
            "get": {
                "operationId": "getTask",
                "summary": "The snapshot; with ?after=N also the messages after N (polling)",
                "parameters": [
                    TASK_ID,
                    {"name": "after", "in": "query", "schema": after},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": {
                    "200": json_answer(ref("TaskSnapshot"), "the snapshot", headers=RETRY_AFTER),
                    "400": error_answer("bad cursor"),
                    "404": error_answer("unknown or expired task"),
                    **COMMON_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}/events": {
            "get": {
                "operationId": "taskEvents",
                "summary": "Replay after the cursor, then tail, as SSE; ends after `finish`",
                "parameters": [
                    TASK_ID,
                    {"name": "Last-Event-ID", "in": "header", "schema": cursor},
                    {"name": "after", "in": "query", "schema": after},
                ],
                "responses": {
                    "200": SSE_STREAM,
                    "204": {"description": "a finished task with nothing after the cursor"},
                    "400": error_answer("cursor beyond the log (invalid_cursor)"),
                    "404": error_answer("unknown or expired task"),
                    **COMMON_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}/cancel": {
            "post": {
                "operationId": "cancelTask",
                "summary": "Cancel (idempotent); answers the final snapshot once confirmed",
                "parameters": [TASK_ID],
                "responses": {
                    "200": json_answer(ref("TaskSnapshot"), "the task has ended"),
                    "202": json_answer(ref("TaskSnapshot"), "the stop is not confirmed yet"),
                    "404": error_answer("unknown or expired task"),
                    **COMMON_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}/webhook": {
            "get": {
                "operationId": "taskWebhook",
                "summary": "The task's webhook delivery: its attempts and the next one (outbox)",
                "parameters": [TASK_ID],
                "responses": {
                    "200": json_answer(ref("WebhookDelivery"), "the delivery record"),
                    "404": error_answer("unknown task, or one without a callbackUrl"),
                    **COMMON_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}/files/{file_name}": {
            "get": {
                "operationId": "taskFile",
                "summary": "A file the task's tools wrote, as an attachment (streamed)",
                "parameters": [TASK_ID, FILE_NAME],
                "responses": {
                    "200": {
                        "description": "the file (Content-Disposition: attachment)",
                        "content": {"*/*": {"schema": {}}},
                    },
                    **FILE_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}/preview/{file_name}": {
            "get": {
                "operationId": "taskFilePreview",
                "summary": "The file inline: plain text and images; HTML and SVG under a CSP "
                "sandbox; other types as an attachment",
                "parameters": [TASK_ID, FILE_NAME],
                "responses": {
                    "200": {"description": "the file", "content": {"*/*": {"schema": {}}}},
                    **FILE_ERRORS,
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
    responses = {"200": json_answer(ok, summary)}
    if unavailable:
        responses["503"] = error_answer("the store is unreachable")
    name = summary.split(" ", 1)[0]
    return {"operationId": name, "summary": summary, "security": [], "responses": responses}
