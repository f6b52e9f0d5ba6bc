"""Per-request file storage: one folder per ``requestId`` under ``FILE_ROOT``.

Names are checked before any path is built: a request id is ``[A-Za-z0-9][A-Za-z0-9._:-]*``
(at most 128 characters), a file name is one path component (no ``/``, ``\\``, NUL or control
characters, not ``.``/``..``, no leading dot, at most 255 bytes). Writes are atomic (temp file then
rename) and limited to ``max_bytes``; copies from the sandbox never follow symlinks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import InvalidRequest, NotFound, PayloadTooLarge

__all__ = ["FileStore", "StoredFile", "check_file_name", "check_request_id"]

_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_META = ".meta.json"
_CHUNK = 1024 * 1024


def check_request_id(value: object) -> str:
    """Return ``value`` if it is a safe request id, else raise :class:`InvalidRequest`."""
    if not isinstance(value, str) or not _REQUEST_ID.fullmatch(value):
        raise InvalidRequest("requestId must match [A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
    return value


def check_file_name(value: object) -> str:
    """Return ``value`` if it is a safe single-component file name, else raise."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest("fileName must be a non-empty string")
    if len(value.encode("utf-8", "surrogatepass")) > 255:
        raise InvalidRequest("fileName is longer than 255 bytes")
    if "/" in value or "\\" in value or value.startswith("."):
        raise InvalidRequest(f"fileName {value!r} is not a plain file name")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise InvalidRequest("fileName contains a control character")
    return value


@dataclass(frozen=True)
class StoredFile:
    """A file kept for a request."""

    request_id: str
    name: str
    size: int
    description: str = ""

    def info(self, base_url: str) -> dict[str, Any]:
        """The JoyAgent ``fileInfo`` entry, with links to this service's file tool."""
        tail = quote(self.request_id, safe="") + "/" + quote(self.name, safe="")
        download = base_url + "/v1/file_tool/download/" + tail
        return {
            "fileName": self.name,
            "ossUrl": download,
            "domainUrl": base_url + "/v1/file_tool/preview/" + tail,
            "downloadUrl": download,
            "fileSize": self.size,
        }


class FileStore:
    """Files of every request, each request in its own folder under ``root``."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)

    def folder(self, request_id: str) -> Path:
        """The folder of ``request_id`` (not created)."""
        return self.root / check_request_id(request_id)

    def path(self, request_id: str, name: str) -> Path:
        """The path of an existing file, or :class:`NotFound`."""
        path = self.folder(request_id) / check_file_name(name)
        if not path.is_file() or path.is_symlink():
            raise NotFound(f"no file {name!r} in request {request_id!r}")
        return path

    def save(self, request_id: str, name: str, data: bytes, description: str = "") -> StoredFile:
        """Store ``data`` as ``name`` (replacing an older file of that name)."""
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(f"the file is larger than {self.max_bytes} bytes")
        return self._write(request_id, name, [data], description)

    def copy_in(self, request_id: str, name: str, source: Path) -> StoredFile:
        """Copy a regular file (never a symlink) into the request's folder."""
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise NotFound(f"cannot read {source.name!r}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise NotFound(f"{source.name!r} is not a regular file")
            if os.fstat(handle.fileno()).st_size > self.max_bytes:
                raise PayloadTooLarge(f"{source.name!r} is larger than {self.max_bytes} bytes")
            return self._write(request_id, name, iter(lambda: handle.read(_CHUNK), b""), "")

    def get(self, request_id: str, name: str) -> StoredFile:
        """The stored file ``name`` of ``request_id``, or :class:`NotFound`."""
        path = self.path(request_id, name)
        description = self._descriptions(path.parent).get(name, "")
        return StoredFile(request_id, name, path.stat().st_size, description)

    def list_files(self, request_id: str) -> list[StoredFile]:
        """Every file of ``request_id``, sorted by name (empty if the request has none)."""
        folder = self.folder(request_id)
        if not folder.is_dir():
            return []
        descriptions = self._descriptions(folder)
        return [
            StoredFile(
                request_id, entry.name, entry.stat().st_size, descriptions.get(entry.name, "")
            )
            for entry in sorted(folder.iterdir())
            if not entry.name.startswith(".") and entry.is_file() and not entry.is_symlink()
        ]

    def read_text(self, request_id: str, name: str, limit: int) -> str:
        """At most ``limit`` characters of a file, decoded as UTF-8 (invalid bytes replaced)."""
        with self.path(request_id, name).open("rb") as handle:
            return handle.read(limit * 4).decode("utf-8", "replace")[:limit]

    def _write(self, request_id: str, name: str, chunks: Any, description: str) -> StoredFile:
        folder = self.folder(request_id)
        check_file_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f".{secrets.token_hex(8)}.part"
        size = 0
        try:
            with temp.open("xb") as handle:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise PayloadTooLarge(f"the file is larger than {self.max_bytes} bytes")
                    handle.write(chunk)
            os.replace(temp, folder / name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        descriptions = self._descriptions(folder)
        if descriptions.get(name, "") != description:
            descriptions[name] = description
            meta_temp = folder / f".{secrets.token_hex(8)}.meta"
            meta_temp.write_text(json.dumps(descriptions), encoding="utf-8")
            os.replace(meta_temp, folder / _META)
        return StoredFile(request_id, name, size, description)

    @staticmethod
    def _descriptions(folder: Path) -> dict[str, str]:
        try:
            loaded = json.loads((folder / _META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}
