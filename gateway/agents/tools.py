"""The tool layer: what a tool is, and the toolbox that runs the model's tool calls.

A tool has a ``name``, an OpenAI ``tools`` entry (``schema()``) and ``run(call)``, which may
print its own streamed messages and returns a :class:`ToolOutcome`. The :class:`ToolBox` runs
one call at a time under the per-tool time limit and the task's tool-call budget, prints the
``tool_result`` message ``{toolName, toolParam, toolResult}`` and returns the text the model
gets back. A tool that fails (an upstream error, an MCP ``isError``, a time limit, bad
arguments) is not fatal: the model reads the error and the run goes on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from gateway.agents.files import FileLinks
from gateway.agents.limits import AgentLimits
from gateway.printer import Printer
from gateway.upstream import ToolCall, UpstreamError

__all__ = ["Tool", "ToolBox", "ToolInvocation", "ToolOutcome", "tool_request_id"]

logger = logging.getLogger(__name__)

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9.:-]")


def tool_request_id(task_id: str) -> str:
    """The ``requestId`` the tool service files a task's outputs under (its id alphabet is
    narrower than a task id's, so ``_`` becomes ``.``, which a task id never contains)."""
    return "task-" + _UNSAFE_ID.sub(".", task_id)


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What a tool run gives back: the text for the model, files it wrote, whether it failed."""

    text: str
    files: tuple[Mapping[str, Any], ...] = ()
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class ToolInvocation:
    """One call of a tool: its arguments and where it runs.

    ``links`` points the ``fileInfo`` links a tool prints at the gateway (``None``: leave them).
    """

    arguments: Mapping[str, Any]
    printer: Printer
    request_id: str
    file_names: tuple[str, ...] = ()
    links: FileLinks | None = None


class Tool(Protocol):
    """A tool the model may call."""

    @property
    def name(self) -> str:
        """The name the model calls it by."""
        ...

    def schema(self) -> dict[str, Any]:
        """Its OpenAI ``tools`` entry (``{"type": "function", "function": {...}}``)."""
        ...

    async def run(self, call: ToolInvocation) -> ToolOutcome:
        """Run it; raise :class:`UpstreamError` when the upstream fails."""
        ...


@dataclass
class ToolBox:
    """The tools of one task, its tool-call budget and the files its tools wrote.

    ``links`` (the gateway's links to this task's files) is handed to every tool call.
    """

    tools: Sequence[Tool]
    printer: Printer
    request_id: str
    limits: AgentLimits
    tool_timeout: float
    calls_made: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)
    links: FileLinks | None = None

    def schemas(self) -> list[dict[str, Any]]:
        """The OpenAI ``tools`` list."""
        return [tool.schema() for tool in self.tools]

    @property
    def calls_left(self) -> int:
        """Tool calls the task may still make."""
        return max(0, self.limits.max_tool_calls - self.calls_made)

    async def call(self, call: ToolCall) -> str:
        """Run one tool call of the model; print its ``tool_result``; return the model's text."""
        try:
            arguments = call.parsed_arguments()
        except UpstreamError as exc:
            arguments = {}
            outcome = ToolOutcome(f"the arguments are not a JSON object ({exc})", is_error=True)
        else:
            outcome = await self._run(call.name, arguments)
        text = outcome.text.strip() or "(no output)"
        if outcome.is_error:
            text = "Error: " + text
        await self.printer.send(
            "tool_result", {"toolName": call.name, "toolParam": arguments, "toolResult": text}
        )
        limit = self.limits.tool_result_chars
        return text if len(text) <= limit else text[:limit] + "\n[output cut]"

    async def _run(self, name: str, arguments: Mapping[str, Any]) -> ToolOutcome:
        tool = next((t for t in self.tools if t.name == name), None)
        if tool is None:
            return ToolOutcome(f"there is no tool named {name!r}", is_error=True)
        if self.calls_left <= 0:
            limit = self.limits.max_tool_calls
            return ToolOutcome(f"not run: this task reached its {limit} tool calls", is_error=True)
        self.calls_made += 1
        invocation = ToolInvocation(
            arguments, self.printer, self.request_id, tuple(self._file_names()), self.links
        )
        try:
            with anyio.fail_after(self.tool_timeout):
                outcome = await tool.run(invocation)
        except TimeoutError:
            outcome = ToolOutcome(f"timed out after {self.tool_timeout:g} s", is_error=True)
        except UpstreamError as exc:
            logger.info("tool %s failed: %s", name, exc.message)
            outcome = ToolOutcome(exc.message, is_error=True)
        self._add_files(outcome.files)
        return outcome

    def _file_names(self) -> list[str]:
        return [str(f["fileName"]) for f in self.files if f.get("fileName")]

    def _add_files(self, files: Sequence[Mapping[str, Any]]) -> None:
        for info in files:
            name = info.get("fileName")
            self.files[:] = [f for f in self.files if not name or f.get("fileName") != name]
            self.files.append(dict(info))
