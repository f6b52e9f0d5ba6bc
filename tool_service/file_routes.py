"""The file tool, ``/v1/file_tool/...``: upload (JSON or multipart), look up, list, download."""

from __future__ import annotations

import mimetypes
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ._http import read_model, services_of
from .errors import InvalidRequest, PayloadTooLarge
from .files import StoredFile, check_file_name, check_request_id

__all__ = ["file_routes"]

_CHUNK = 1024 * 1024


class _FileRef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    requestId: str
    fileName: str = ""


class _Upload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    requestId: str
    fileName: str
    description: str = Field(default="", max_length=2_000)
    content: str


def _answer(request: Request, stored: StoredFile) -> dict[str, Any]:
    info = stored.info(services_of(request).base_url(request))
    return {**info, "requestId": stored.request_id, "description": stored.description}


async def upload_file(request: Request) -> Response:
    """``{requestId, fileName, description, content}``: store ``content`` (text) as a file."""
    body = await read_model(request, _Upload)
    files = services_of(request).files
    stored = await anyio.to_thread.run_sync(
        files.save, body.requestId, body.fileName, body.content.encode("utf-8"), body.description
    )
    return JSONResponse(_answer(request, stored))


async def upload_file_data(request: Request) -> Response:
    """Multipart: ``requestId``, ``file``, optional ``fileName`` and ``description``."""
    files = services_of(request).files
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("the form needs a 'file' part")
        request_id = check_request_id(form.get("requestId"))
        name = check_file_name(form.get("fileName") or upload.filename or "")
        description = str(form.get("description") or "")[:2_000]
        data = bytearray()
        while chunk := await upload.read(_CHUNK):
            data += chunk
            if len(data) > files.max_bytes:
                raise PayloadTooLarge(f"the file is larger than {files.max_bytes} bytes")
    stored = await anyio.to_thread.run_sync(files.save, request_id, name, bytes(data), description)
    return JSONResponse(_answer(request, stored))


async def get_file(request: Request) -> Response:
    """``{requestId, fileName}``: the file's ``fileInfo`` and description."""
    body = await read_model(request, _FileRef)
    stored = services_of(request).files.get(body.requestId, body.fileName)
    return JSONResponse(_answer(request, stored))


async def get_file_list(request: Request) -> Response:
    """``{requestId}``: every file of the request."""
    body = await read_model(request, _FileRef)
    stored = services_of(request).files.list_files(body.requestId)
    results = [_answer(request, item) for item in stored]
    return JSONResponse({"requestId": body.requestId, "total": len(results), "results": results})


async def download(request: Request) -> Response:
    """The file as an attachment."""
    request_id, name = request.path_params["request_id"], request.path_params["file_name"]
    path = services_of(request).files.path(request_id, name)
    return FileResponse(path, filename=name, media_type="application/octet-stream")


async def preview(request: Request) -> Response:
    """The file shown inline; active content is sandboxed by CSP so it cannot act as this origin."""
    request_id, name = request.path_params["request_id"], request.path_params["file_name"]
    path = services_of(request).files.path(request_id, name)
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or name.endswith((".md", ".csv", ".json", ".py")):
        media_type = (
            media_type if media_type.startswith("text/") else "text/plain"
        ) + "; charset=utf-8"
    headers = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
    return FileResponse(
        path,
        filename=name,
        media_type=media_type,
        headers=headers,
        content_disposition_type="inline",
    )


def file_routes() -> list[Route]:
    """The routes of the file tool (mounted under ``/v1/file_tool``)."""
    return [
        Route("/upload_file", upload_file, methods=["POST"]),
        Route("/upload_file_data", upload_file_data, methods=["POST"]),
        Route("/get_file", get_file, methods=["POST"]),
        Route("/get_file_list", get_file_list, methods=["POST"]),
        Route("/download/{request_id}/{file_name}", download, methods=["GET"]),
        Route("/preview/{request_id}/{file_name}", preview, methods=["GET"]),
    ]
