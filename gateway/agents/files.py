"""The links a user follows to a task's files: the gateway's, never the tool service's.

The tool service files what a task's tools write under the task's tool ``requestId``
(:func:`~gateway.agents.tools.tool_request_id`) and announces each file as a JoyAgent
``fileInfo`` entry ``{fileName, ossUrl, domainUrl, downloadUrl, fileSize}`` whose links point
at itself. That service is internal (DESIGN §10: no published port, a service token), so those
links are dead for a browser. Before a tool's frame is printed, :meth:`FileLinks.info` points
them at the gateway instead::

    downloadUrl, ossUrl  {PUBLIC_URL}/api/tasks/{taskId}/files/{fileName}    (attachment)
    domainUrl            {PUBLIC_URL}/api/tasks/{taskId}/preview/{fileName}  (inline)

which serves them to the task's owner only (``gateway.routes.files``). The links are absolute
(the gateway's ``PUBLIC_URL``): the page that shows them runs on another origin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

__all__ = ["DEFAULT_PUBLIC_URL", "FileLinks", "file_name_problem", "task_file_path"]

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"
"""The gateway's public URL when nothing says otherwise (its default ``HOST`` and ``PORT``)."""
MAX_FILE_NAME_BYTES = 255


def file_name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain file name of a task (``None``: it is one).

    The tool service's own rule: one path component (no ``/``, ``\\``, NUL or other control
    characters), not ``.``/``..`` nor any other name with a leading dot, at most 255 bytes.
    """
    if not name:
        return "the file name is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES:
        return f"the file name is longer than {MAX_FILE_NAME_BYTES} bytes"
    if "/" in name or "\\" in name or name.startswith("."):
        return "the file name must be one plain path component (no '/', '\\' or leading '.')"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "the file name contains a control character"
    return None


def task_file_path(task_id: str, name: str, *, preview: bool = False) -> str:
    """The gateway's path of one file of a task (quoted; ``preview``: the inline view)."""
    kind = "preview" if preview else "files"
    return f"/api/tasks/{quote(task_id, safe='')}/{kind}/{quote(name, safe='')}"


@dataclass(frozen=True, slots=True)
class FileLinks:
    """The gateway's links to the files of one task (``base_url``: the gateway's public URL)."""

    base_url: str
    task_id: str

    def download_url(self, name: str) -> str:
        """Where the file is downloaded (``Content-Disposition: attachment``)."""
        return self.base_url + task_file_path(self.task_id, name)

    def preview_url(self, name: str) -> str:
        """Where the file is shown inline (safe types only; see ``gateway.routes.files``)."""
        return self.base_url + task_file_path(self.task_id, name, preview=True)

    def info(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """The ``fileInfo`` entry with its links on the gateway (other fields kept).

        An entry without a usable ``fileName`` keeps no link at all rather than one into the
        tool service.
        """
        name = entry.get("fileName")
        result = {k: v for k, v in entry.items() if k not in ("ossUrl", "domainUrl", "downloadUrl")}
        if isinstance(name, str) and file_name_problem(name) is None:
            download = self.download_url(name)
            result.update(ossUrl=download, domainUrl=self.preview_url(name), downloadUrl=download)
        return result

    def rewrite(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        """``frame`` with every entry of its ``fileInfo`` list pointed at the gateway."""
        infos = frame.get("fileInfo")
        if not isinstance(infos, list):
            return dict(frame)
        rewritten = [self.info(i) if isinstance(i, Mapping) else i for i in infos]
        return {**frame, "fileInfo": rewritten}
