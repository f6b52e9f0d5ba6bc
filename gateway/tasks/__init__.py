"""Task handlers, their context, and the manager that runs them."""

from gateway.tasks.context import (
    CompletionCallback,
    Handler,
    QueueFull,
    TaskContext,
    TaskFailure,
    TaskRegistry,
    TaskSettings,
    UnknownAgentType,
)
from gateway.tasks.manager import TaskManager

__all__ = [
    "CompletionCallback",
    "Handler",
    "QueueFull",
    "TaskContext",
    "TaskFailure",
    "TaskManager",
    "TaskRegistry",
    "TaskSettings",
    "UnknownAgentType",
]
