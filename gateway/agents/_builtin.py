"""The built-in tools: ``code_interpreter``, ``deepsearch`` and ``report`` of the tool service.

Each streams the service's frames into one Printer message (``code``, ``deep_search``,
``markdown``/``html``) whose ``resultMap`` is the frame without ``requestId``: deltas while the
tool works, then the tool's final frame, which holds the full content (all of ``codeOutput``,
the whole ``answer``, the whole report ``data``, and ``fileInfo``, whose links lead to the
gateway: see :mod:`gateway.agents.files`). The model is given a text digest of the final frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import aclosing
from typing import Any

from gateway.agents._streams import MessageStream
from gateway.agents.tools import Tool, ToolInvocation, ToolOutcome
from gateway.upstream import ToolServiceClient

__all__ = ["CodeInterpreterTool", "DeepSearchTool", "ReportTool", "builtin_tools"]

_GENERAL = {"mode": "general", "token": 5, "time": 5}


def _function(
    name: str, description: str, properties: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    """An OpenAI ``tools`` entry."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def _view(frame: Mapping[str, Any], call: ToolInvocation) -> dict[str, Any]:
    """The frame as a message's ``resultMap``: without the tool service's ``requestId``, its
    ``fileInfo`` links pointed at the gateway (the tool service is not reachable by users)."""
    view = {k: v for k, v in frame.items() if k not in ("requestId", "request_id")}
    return call.links.rewrite(view) if call.links is not None else view


def _files(frame: Mapping[str, Any] | None) -> tuple[Mapping[str, Any], ...]:
    infos = (frame or {}).get("fileInfo") or ()
    return tuple(info for info in infos if isinstance(info, Mapping))


def _file_line(files: tuple[Mapping[str, Any], ...]) -> str:
    names = [str(f.get("fileName")) for f in files if f.get("fileName")]
    return "\nFiles written: " + ", ".join(names) if names else ""


class CodeInterpreterTool:
    """Runs Python in the tool service's sandbox; prints a ``code`` message."""

    name = "code_interpreter"

    def __init__(self, client: ToolServiceClient) -> None:
        self._client = client

    def schema(self) -> dict[str, Any]:
        return _function(
            self.name,
            "Run Python 3 code in a sandbox and return what it prints. Give the task; give the "
            "code too when you have written it. Files of earlier steps are in the working folder.",
            {
                "task": {"type": "string", "description": "what the code must do"},
                "code": {"type": "string", "description": "the Python program (optional)"},
            },
            ["task"],
        )

    async def run(self, call: ToolInvocation) -> ToolOutcome:
        args = call.arguments
        payload: dict[str, Any] = {
            "requestId": call.request_id,
            "task": str(args.get("task") or args.get("code") or ""),
            "fileNames": list(call.file_names),
            "stream": True,
            "streamMode": _GENERAL,
        }
        if args.get("code"):
            payload["code"] = str(args["code"])
        code, output = "", []
        final: dict[str, Any] | None = None
        async with (
            MessageStream(call.printer, "code") as message,
            aclosing(self._client.stream(self.name, payload)) as frames,
        ):
            async for frame in frames:
                if frame.get("isFinal"):
                    final = _view(frame, call)
                    await message.final(final)
                    break
                code = code or str(frame.get("code") or "")
                output.append(str(frame.get("codeOutput") or ""))
                full = {"code": code, "codeOutput": "".join(output), "fileInfo": []}
                await message.delta(_view(frame, call), full)
        text = str(final.get("codeOutput", "")) if final else "".join(output)
        exit_code = final.get("exitCode") if final else None
        status = f"exit code {exit_code}\n" if exit_code is not None else ""
        files = _files(final)
        return ToolOutcome(status + text + _file_line(files), files, bool(exit_code))


class DeepSearchTool:
    """Searches and writes a cited answer; prints a ``deep_search`` message."""

    name = "deepsearch"

    def __init__(self, client: ToolServiceClient) -> None:
        self._client = client

    def schema(self) -> dict[str, Any]:
        return _function(
            self.name,
            "Search for information and get an answer that cites its sources.",
            {"query": {"type": "string", "description": "the question to research"}},
            ["query"],
        )

    async def run(self, call: ToolInvocation) -> ToolOutcome:
        query = str(call.arguments.get("query") or "").strip()
        payload = {
            "request_id": call.request_id,
            "query": query,
            "maxLoop": 1,
            "search_engines": [],
            "stream": True,
            "streamMode": _GENERAL,
        }
        answer: list[str] = []
        queries: list[Any] = []
        docs: list[Any] = []
        final: dict[str, Any] | None = None
        async with (
            MessageStream(call.printer, "deep_search") as message,
            aclosing(self._client.stream(self.name, payload)) as frames,
        ):
            async for frame in frames:
                if frame.get("isFinal"):
                    final = _view(frame, call)
                    await message.final(final)
                    break
                if frame.get("messageType") == "report":
                    answer.append(str(frame.get("answer") or ""))
                elif frame.get("messageType") == "search":
                    found = frame.get("searchResult") or {}
                    queries += found.get("query") or []
                    docs += found.get("docs") or []
                full = {
                    "query": query,
                    "messageType": "report",
                    "answer": "".join(answer),
                    "searchResult": {"query": queries, "docs": docs},
                }
                await message.delta(_view(frame, call), full)
        text = str(final.get("answer", "")) if final else "".join(answer)
        return ToolOutcome(text)


class ReportTool:
    """Writes a markdown or HTML report file; prints a ``markdown`` or ``html`` message."""

    name = "report"

    def __init__(self, client: ToolServiceClient) -> None:
        self._client = client

    def schema(self) -> dict[str, Any]:
        return _function(
            self.name,
            "Write a report document (markdown or HTML) and save it as a file. Files of earlier "
            "steps are given to the writer as material.",
            {
                "task": {"type": "string", "description": "what the report must cover"},
                "fileName": {"type": "string", "description": "the file name, e.g. report.md"},
                "fileType": {"type": "string", "enum": ["markdown", "html", "ppt"]},
            },
            ["task"],
        )

    async def run(self, call: ToolInvocation) -> ToolOutcome:
        args = call.arguments
        file_type = str(args.get("fileType") or "markdown")
        if file_type not in ("markdown", "html", "ppt"):
            file_type = "markdown"
        payload = {
            "requestId": call.request_id,
            "task": str(args.get("task") or ""),
            "fileNames": list(call.file_names),
            "fileName": str(args.get("fileName") or "report"),
            "fileDescription": str(args.get("task") or "")[:200],
            "fileType": file_type,
            "stream": True,
            "streamMode": _GENERAL,
        }
        parts: list[str] = []
        final: dict[str, Any] | None = None
        message_type = "markdown" if file_type == "markdown" else "html"
        async with (
            MessageStream(call.printer, message_type) as message,
            aclosing(self._client.stream(self.name, payload)) as frames,
        ):
            async for frame in frames:
                if frame.get("isFinal"):
                    final = _view(frame, call)
                    await message.final(final)
                    break
                parts.append(str(frame.get("data") or ""))
                await message.delta(_view(frame, call), {"data": "".join(parts), "fileInfo": []})
        files = _files(final)
        names = [str(f.get("fileName")) for f in files if f.get("fileName")]
        saved = f"The report was saved as {', '.join(names)}.\n\n" if names else ""
        return ToolOutcome(saved + (str(final.get("data", "")) if final else "".join(parts)), files)


def builtin_tools(client: ToolServiceClient) -> list[Tool]:
    """The three built-in tools, backed by ``client``."""
    return [CodeInterpreterTool(client), DeepSearchTool(client), ReportTool(client)]
