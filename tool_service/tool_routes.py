"""The streaming tools, ``/v1/tool/...``, and ``GET /health``.

Each handler validates its input before anything starts (so bad input is a 4xx JSON answer, not a
stream), then hands the tool's frame generator to :class:`~tool_service.sse.ToolResponse`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._http import read_model, services_of
from .code_interpreter import CodeInterpreterRequest, code_interpreter_frames
from .deepsearch import DeepSearchRequest, deepsearch_frames
from .files import check_request_id
from .report import ReportRequest, report_frames
from .sse import ToolResponse

__all__ = ["tool_routes"]


async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok", "service": "tool_service"})


async def code_interpreter(request: Request) -> Response:
    """Run code (given, or written by the LLM for ``task``) in the sandbox."""
    services = services_of(request)
    body = await read_model(request, CodeInterpreterRequest)
    check_request_id(body.request_id)
    body.check()
    for name in body.file_names:
        services.files.get(body.request_id, name)
    services.sandbox.require_available()  # a 503 answer, before any stream starts
    frames = code_interpreter_frames(
        body,
        llm=services.llm,
        sandbox=services.sandbox,
        files=services.files,
        base_url=services.base_url(request),
    )
    return ToolResponse(
        frames,
        request_id=body.request_id,
        stream=body.stream,
        heartbeat_interval=services.settings.heartbeat_interval,
    )


async def deepsearch(request: Request) -> Response:
    """Search the configured engines and stream a cited answer."""
    services = services_of(request)
    body = await read_model(request, DeepSearchRequest)
    check_request_id(body.request_id)
    frames = deepsearch_frames(body, services.engines, services.llm)
    return ToolResponse(
        frames,
        request_id=body.request_id,
        stream=body.stream,
        heartbeat_interval=services.settings.heartbeat_interval,
    )


async def report(request: Request) -> Response:
    """Stream a report from the LLM and save it as a file of the request."""
    services = services_of(request)
    body = await read_model(request, ReportRequest)
    check_request_id(body.request_id)
    body.output_name()
    for name in body.file_names:
        services.files.get(body.request_id, name)
    frames = report_frames(
        body, llm=services.llm, files=services.files, base_url=services.base_url(request)
    )
    return ToolResponse(
        frames,
        request_id=body.request_id,
        stream=body.stream,
        heartbeat_interval=services.settings.heartbeat_interval,
    )


def tool_routes() -> list[Route]:
    """The routes of the tools (mounted under ``/v1/tool``)."""
    return [
        Route("/code_interpreter", code_interpreter, methods=["POST"]),
        Route("/deepsearch", deepsearch, methods=["POST"]),
        Route("/report", report, methods=["POST"]),
    ]
