"""Task handlers, their context, and the manager that runs them."""

from gateway.tasks.context import (
    CompletionCallback,
    Handler,
    TaskContext,
    TaskFailure,
    TaskRegistry,
    TaskSettings,
)
from gateway.tasks.manager import QueueFull, TaskManager, UnknownAgentType

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
