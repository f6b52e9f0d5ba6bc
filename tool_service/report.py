"""The ``report`` tool: a markdown or HTML report streamed from the LLM and saved as a file.

Frames (genie-tool's shape): ``{requestId, data, isFinal: false}`` deltas batched by ``streamMode``,
then ``{requestId, data: <full text>, fileInfo: [...], isFinal: true}`` once the report is saved
in the request's folder (``ppt`` is a slide deck written as one HTML document).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from .files import FileStore, check_file_name
from .llm import LLMClient, Message
from .sse import Frame, StreamMode, batch_text

__all__ = ["ReportRequest", "report_frames"]

_FILE_CHARS = 8_000
_TOTAL_FILE_CHARS = 40_000
_WRAPPING_FENCE = re.compile(r"\A\s*```[\w-]*[^\n]*\n(.*?)\n?```\s*\Z", re.DOTALL)
_INSTRUCTIONS = {
    "markdown": "Write a well-structured report in Markdown, with headings and a short summary.",
    "html": (
        "Write the report as one complete, self-contained HTML document "
        "(inline CSS, no scripts, no external resources)."
    ),
    "ppt": (
        "Write a slide deck as one complete, self-contained HTML document: one <section> per "
        "slide, inline CSS, no scripts, no external resources."
    ),
}


class ReportRequest(BaseModel):
    """``POST /v1/tool/report``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    request_id: str = Field(alias="requestId")
    task: str = Field(min_length=1, max_length=20_000)
    file_names: list[str] = Field(default_factory=list, alias="fileNames", max_length=50)
    file_name: str | None = Field(default=None, alias="fileName")
    file_description: str = Field(default="", alias="fileDescription", max_length=2_000)
    file_type: Literal["html", "markdown", "ppt"] = Field(default="markdown", alias="fileType")
    stream: bool = True
    stream_mode: StreamMode = Field(default_factory=StreamMode, alias="streamMode")

    def output_name(self) -> str:
        """The name the report is saved under, with the extension of its type."""
        suffix = ".md" if self.file_type == "markdown" else ".html"
        name = (self.file_name or "report").strip() or "report"
        if not name.lower().endswith(suffix):
            name += suffix
        return check_file_name(name)


async def report_frames(
    request: ReportRequest, *, llm: LLMClient, files: FileStore, base_url: str
) -> AsyncGenerator[Frame, None]:
    """Stream the report from the LLM, then save it and announce the file."""
    name = request.output_name()
    parts: list[str] = []
    async for batch in batch_text(llm.stream_chat(_prompt(request, files)), request.stream_mode):
        parts.append(batch)
        yield {"requestId": request.request_id, "data": batch, "isFinal": False}
    full = "".join(parts)
    fenced = _WRAPPING_FENCE.match(full)
    content = fenced.group(1) if fenced else full
    stored = await anyio.to_thread.run_sync(
        files.save, request.request_id, name, content.encode("utf-8"), request.file_description
    )
    yield {
        "requestId": request.request_id,
        "data": full,
        "fileInfo": [stored.info(base_url)],
        "isFinal": True,
    }


def _prompt(request: ReportRequest, files: FileStore) -> list[Message]:
    sections = []
    budget = _TOTAL_FILE_CHARS
    for name in request.file_names:
        if budget <= 0:
            break
        text = files.read_text(request.request_id, name, min(_FILE_CHARS, budget))
        budget -= len(text)
        sections.append(f"### File: {name}\n{text}")
    material = "\n\n".join(sections) if sections else "(no files)"
    return [
        {"role": "system", "content": _INSTRUCTIONS[request.file_type]},
        {"role": "user", "content": f"Task: {request.task}\n\nMaterial:\n\n{material}"},
    ]
