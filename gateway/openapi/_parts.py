"""Small pieces the OpenAPI document repeats: references, JSON answers, errors, parameters."""

from __future__ import annotations

from typing import Any

REF = "#/components/schemas/{model}"
JSON = "application/json"
SSE = "text/event-stream"
DELIVERY_TIMES = ("lastStatus", "lastAttemptAt", "deliveredAt", "nextAttemptAt")


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def json_answer(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def error_answer(description: str, **extra: Any) -> dict[str, Any]:
    return json_answer(ref("Error"), description, **extra)


RETRY_AFTER = {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}}
COMMON_ERRORS = {
    "401": error_answer(
        "missing or unknown API key (when API_KEYS is set)",
        headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "413": error_answer("body too large"),
    "414": error_answer("URL too long"),
    "429": error_answer(
        "rate limited (rate_limited), queue full (queue_full), or too many wrong API keys from "
        "this address (too_many_failed_auth)",
        headers=RETRY_AFTER,
    ),
    "431": error_answer("headers too large"),
    "503": error_answer(
        "the task store (Redis) is unreachable (store_unavailable)", headers=RETRY_AFTER
    ),
}
TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"},
}
FILE_NAME = {
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
FILE_ERRORS = {
    "400": error_answer("not one plain file name"),
    "404": error_answer("unknown or expired task, or no such file"),
    "502": error_answer("the tool service could not give the file (upstream_error)"),
    "504": error_answer("the tool service did not answer in time (timeout)"),
    **COMMON_ERRORS,
}
SSE_STREAM = {
    "description": "the task's log as Server-Sent Events (`id: <seq>`, `data: <Message>`)",
    "content": {SSE: {"schema": {"type": "string"}}},
}
