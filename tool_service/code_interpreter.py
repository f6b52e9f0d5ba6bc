"""The ``code_interpreter`` tool: get code (from the request or the LLM), run it in the sandbox.

Frames (genie-tool's shape): first ``{requestId, code, codeOutput: "", fileInfo: [],
isFinal: false}`` with the code to run, then one frame per output batch (``codeOutput`` deltas,
batched by ``streamMode``), and finally ``{requestId, code, codeOutput: <all output>, exitCode,
fileInfo, isFinal: true}`` where ``fileInfo`` lists the files the code wrote (copied to the
request's folder).
A run past the wall-clock limit ends with a ``timeout`` error frame instead.
"""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

import anyio
from pydantic import BaseModel, ConfigDict, Field

from .errors import InvalidRequest, SandboxError, UpstreamError
from .files import FileStore
from .llm import LLMClient, Message
from .sandbox import Exited, Sandbox
from .sse import Frame, StreamMode, batch_text

__all__ = ["CodeInterpreterRequest", "code_interpreter_frames", "extract_code"]

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PREVIEW_CHARS = 500
_SYSTEM_PROMPT = (
    "You write Python 3 programs. Answer with exactly one ```python code block that accomplishes "
    "the task. The listed files are in the current directory; write any result files (csv, png, "
    "md, ...) to the current directory and print a short summary of the results."
)


class CodeInterpreterRequest(BaseModel):
    """``POST /v1/tool/code_interpreter``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    request_id: str = Field(alias="requestId")
    task: str = Field(default="", max_length=20_000)
    code: str | None = Field(default=None, max_length=200_000)
    file_names: list[str] = Field(default_factory=list, alias="fileNames", max_length=50)
    stream: bool = True
    stream_mode: StreamMode = Field(default_factory=StreamMode, alias="streamMode")

    def check(self) -> None:
        """Refuse a request with neither a task nor code."""
        if not self.task.strip() and not (self.code or "").strip():
            raise InvalidRequest("give a task or code")


def extract_code(answer: str) -> str:
    """The code in an LLM answer: its first ```python block, else its first block, else all."""
    blocks = _FENCE.findall(answer)
    for language, body in blocks:
        if language.lower() in ("python", "py", "python3"):
            return str(body).strip("\n")
    if blocks:
        return str(blocks[0][1]).strip("\n")
    return answer.strip()


@dataclass
class _Run:
    output: list[str]
    exited: Exited | None = None


async def code_interpreter_frames(
    request: CodeInterpreterRequest,
    *,
    llm: LLMClient,
    sandbox: Sandbox,
    files: FileStore,
    base_url: str,
) -> AsyncGenerator[Frame, None]:
    """Run the request's code (asking the LLM for it if needed) and stream what it prints."""
    request_id = request.request_id
    inputs = {name: files.path(request_id, name) for name in request.file_names}
    code = request.code
    if not code or not code.strip():
        answer = await llm.complete(_prompt(request, files))
        code = extract_code(answer)
        if not code:
            raise UpstreamError("the LLM answered without code")
    yield {
        "requestId": request_id,
        "code": code,
        "codeOutput": "",
        "fileInfo": [],
        "isFinal": False,
    }
    run = _Run(output=[])
    async with sandbox.workspace(inputs) as workspace:
        execution = sandbox.run(workspace, code)
        async with (
            aclosing(execution),
            aclosing(batch_text(_texts(execution, run), request.stream_mode)) as batches,
        ):
            async for batch in batches:
                frame = {"requestId": request_id, "code": "", "codeOutput": batch}
                yield {**frame, "fileInfo": [], "isFinal": False}
        written = workspace.written_files()
        stored = [
            await anyio.to_thread.run_sync(files.copy_in, request_id, path.name, path)
            for path in written
        ]
    exited = run.exited
    if exited is None:
        raise SandboxError("the sandbox ended without an exit status")
    output = "".join(run.output)
    if exited.exit_code < 0:
        output += f"\n[the process was killed by {_signal_name(-exited.exit_code)}]\n"
    yield {
        "requestId": request_id,
        "code": code,
        "codeOutput": output,
        "exitCode": exited.exit_code,
        "fileInfo": [item.info(base_url) for item in stored],
        "isFinal": True,
    }


async def _texts(execution: AsyncIterator[str | Exited], run: _Run) -> AsyncGenerator[str, None]:
    """The output chunks of ``execution``; its exit status is kept in ``run``."""
    async for item in execution:
        if isinstance(item, Exited):
            run.exited = item
        else:
            run.output.append(item)
            yield item


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _prompt(request: CodeInterpreterRequest, files: FileStore) -> list[Message]:
    listing = []
    for name in request.file_names:
        preview = files.read_text(request.request_id, name, _PREVIEW_CHARS)
        listing.append(f"- {name} (starts with):\n{preview}")
    described = "\n".join(listing) if listing else "(no files)"
    return [
        {"role": "system", "content": _SYSTEM_PROMPT},
        {"role": "user", "content": f"Task: {request.task}\n\nFiles:\n{described}"},
    ]
