"""The native wire protocol: requests, task records and messages (pure data, no I/O)."""

from gateway.protocol.messages import (
    MESSAGE_TYPES,
    PAYLOAD_FIELDS,
    StoredMessage,
    appended_message,
    encode_body,
    encode_message,
    stamp_seq,
)
from gateway.protocol.numbers import parse_decimal
from gateway.protocol.requests import AgentRequest, FileRef
from gateway.protocol.tasks import (
    TERMINAL_STATUSES,
    ErrorCode,
    TaskError,
    TaskRecord,
    TaskStatus,
    is_legal_transition,
    new_message_id,
    new_task_id,
    now_ms,
    task_links,
    task_snapshot,
)

__all__ = [
    "MESSAGE_TYPES",
    "PAYLOAD_FIELDS",
    "TERMINAL_STATUSES",
    "AgentRequest",
    "ErrorCode",
    "FileRef",
    "StoredMessage",
    "TaskError",
    "TaskRecord",
    "TaskStatus",
    "appended_message",
    "encode_body",
    "encode_message",
    "is_legal_transition",
    "new_message_id",
    "new_task_id",
    "now_ms",
    "parse_decimal",
    "stamp_seq",
    "task_links",
    "task_snapshot",
]
