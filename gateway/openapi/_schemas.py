"""``components.schemas`` of the OpenAPI document; the request body comes from pydantic."""

from __future__ import annotations

from typing import Any

from gateway.openapi._parts import DELIVERY_TIMES, REF, nullable, ref
from gateway.protocol import AgentRequest, TaskStatus


def schemas() -> dict[str, Any]:
    request = AgentRequest.model_json_schema(by_alias=True, ref_template=REF)
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
            "status": ref("TaskStatus"),
            "createdAt": {"type": "integer"},
            "startedAt": nullable({"type": "integer"}),
            "endedAt": nullable({"type": "integer"}),
            "error": nullable(ref("TaskError")),
            "lastSeq": {"type": "integer", "minimum": 0},
            "result": nullable({"type": "string"}),
            "links": ref("Links"),
            "messages": {"type": "array", "items": ref("Message")},
            "nextAfter": {"type": "integer", "minimum": 0},
        },
    }
    attempt = {
        "type": "object",
        "required": ["at", "status", "error"],
        "properties": {"at": {"type": "integer"}, "status": nullable({"type": "integer"})}
        | {"error": nullable({"type": "string"})},
    }
    delivery = {
        "type": "object",
        "required": ["taskId", "callbackUrl", "status", "attempts"],
        "properties": {
            "taskId": {"type": "string"},
            "callbackUrl": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            "attempts": {"type": "integer", "minimum": 0},
            **{n: nullable({"type": "integer"}) for n in DELIVERY_TIMES},
            "lastError": nullable({"type": "string"}),
            "webhookId": nullable({"type": "string"}),
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
            "properties": {"taskId": {"type": "string"}, "status": status, "links": ref("Links")},
        },
        "TaskPage": {
            "type": "object",
            "required": ["tasks", "nextCursor"],
            "properties": {
                "tasks": {"type": "array", "items": ref("TaskSnapshot")},
                "nextCursor": nullable({"type": "string"}),
            },
        },
        "TaskBatch": {
            "type": "object",
            "required": ["tasks", "missing"],
            "properties": {
                "tasks": {"type": "array", "items": ref("TaskSnapshot")},
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
