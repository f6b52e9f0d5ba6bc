"""ToolServiceClient against a fake tool service speaking the genie-tool wire format."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import anyio
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.upstream import (
    ToolServiceClient,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamRemoteError,
    UpstreamSettings,
    UpstreamTimeout,
)
from tests.gateway.upstream.fakes import ScriptedStream
from tests.helpers import serve_app

pytestmark = pytest.mark.anyio


def frame(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


HEARTBEAT = b"data: heartbeat\n\n"
DONE = b"data: [DONE]\n\n"


async def code_interpreter(request: Request) -> Response:
    body = orjson.loads(await request.body())
    rid = body["requestId"]
    return ScriptedStream(
        [
            frame({"requestId": rid, "code": "print(1)", "fileInfo": [], "isFinal": False}),
            HEARTBEAT,
            b": a comment\n\n",
            frame({"requestId": rid, "codeOutput": "1", "fileInfo": [], "isFinal": True}),
            DONE,
        ]
    )


async def report(request: Request) -> Response:
    error = frame({"requestId": "r", "error": {"message": "disk full"}})
    return ScriptedStream([frame({"requestId": "r", "data": "# T", "isFinal": False}), error, DONE])


async def deepsearch(request: Request) -> Response:
    return ScriptedStream([frame({"messageType": "extend", "isFinal": False})], ending="cut")


async def ends_cleanly_without_done(request: Request) -> Response:
    return ScriptedStream([frame({"isFinal": True})])


async def stall(request: Request) -> Response:
    return ScriptedStream([frame({"isFinal": False})], ending="stall")


async def not_json(request: Request) -> Response:
    return ScriptedStream([b"data: {oops\n\n", DONE])


async def plain_json(request: Request) -> Response:
    return JSONResponse({"requestId": "r", "codeOutput": "2", "isFinal": True})


async def broken(request: Request) -> Response:
    return JSONResponse({"error": "boom"}, status_code=503)


APP = Starlette(
    routes=[
        Route("/v1/tool/code_interpreter", code_interpreter, methods=["POST"]),
        Route("/v1/tool/report", report, methods=["POST"]),
        Route("/v1/tool/deepsearch", deepsearch, methods=["POST"]),
        Route("/v1/tool/no_done", ends_cleanly_without_done, methods=["POST"]),
        Route("/v1/tool/stall", stall, methods=["POST"]),
        Route("/v1/tool/not_json", not_json, methods=["POST"]),
        Route("/v1/tool/plain_json", plain_json, methods=["POST"]),
        Route("/v1/tool/broken", broken, methods=["POST"]),
    ]
)


@pytest.fixture(scope="module")
def settings() -> Iterator[UpstreamSettings]:
    with serve_app(APP) as server:
        yield UpstreamSettings(tool_service_url=server.url, tool_idle_timeout=0.5, tool_timeout=10)


async def collect(client: ToolServiceClient, tool: str) -> list[dict[str, Any]]:
    with anyio.fail_after(10):
        async with aclosing(client.stream(tool, {"requestId": "r1", "task": "t"})) as frames:
            return [f async for f in frames]


async def test_frames_are_parsed_and_heartbeats_and_comments_skipped(
    settings: UpstreamSettings,
) -> None:
    async with ToolServiceClient(settings) as client:
        frames = await collect(client, "code_interpreter")
    assert frames == [
        {"requestId": "r1", "code": "print(1)", "fileInfo": [], "isFinal": False},
        {"requestId": "r1", "codeOutput": "1", "fileInfo": [], "isFinal": True},
    ]


async def test_an_error_frame_raises_after_the_frames_before_it(settings: UpstreamSettings) -> None:
    seen: list[dict[str, Any]] = []
    async with ToolServiceClient(settings) as client:
        with pytest.raises(UpstreamRemoteError, match="disk full") as caught:
            async with aclosing(client.stream("report", {})) as frames:
                async for f in frames:
                    seen.append(f)
    assert seen == [{"requestId": "r", "data": "# T", "isFinal": False}]
    assert caught.value.code == "upstream_error"


async def test_a_stream_cut_without_done_raises(settings: UpstreamSettings) -> None:
    async with ToolServiceClient(settings) as client:
        with pytest.raises(UpstreamProtocolError):
            await collect(client, "deepsearch")


async def test_a_stream_that_ends_cleanly_without_done_raises(settings: UpstreamSettings) -> None:
    async with ToolServiceClient(settings) as client:
        with pytest.raises(UpstreamProtocolError, match=r"before \[DONE\]"):
            await collect(client, "no_done")


async def test_a_silent_tool_hits_the_idle_timeout(settings: UpstreamSettings) -> None:
    async with ToolServiceClient(settings) as client:
        with pytest.raises(UpstreamTimeout) as caught:
            await collect(client, "stall")
    assert caught.value.phase == "idle"
    assert caught.value.code == "timeout"


async def test_a_tool_over_its_total_time_limit_times_out(settings: UpstreamSettings) -> None:
    short = replace(settings, tool_idle_timeout=5, tool_timeout=0.3)
    async with ToolServiceClient(short) as client:
        with pytest.raises(UpstreamTimeout) as caught:
            await collect(client, "stall")
    assert caught.value.phase == "total"


async def test_a_frame_that_is_not_json_raises(settings: UpstreamSettings) -> None:
    async with ToolServiceClient(settings) as client:
        with pytest.raises(UpstreamProtocolError, match="not JSON"):
            await collect(client, "not_json")


async def test_a_plain_json_answer_is_yielded_as_one_frame(settings: UpstreamSettings) -> None:
    async with ToolServiceClient(settings) as client:
        assert await collect(client, "plain_json") == [
            {"requestId": "r", "codeOutput": "2", "isFinal": True}
        ]


async def test_an_http_error_status_raises_with_the_status(settings: UpstreamSettings) -> None:
    async with ToolServiceClient(settings) as client:
        with pytest.raises(UpstreamHTTPError, match="boom") as caught:
            await collect(client, "broken")
    assert caught.value.upstream_status == 503


async def test_an_invalid_tool_name_is_refused_before_any_request(
    settings: UpstreamSettings,
) -> None:
    async with ToolServiceClient(settings) as client:
        with pytest.raises(ValueError):
            await collect(client, "../admin")


async def test_leaving_early_closes_the_stream(settings: UpstreamSettings) -> None:
    async with ToolServiceClient(settings) as client:
        with anyio.fail_after(5):
            async with aclosing(client.stream("stall", {})) as frames:
                first = await anext(frames)
    assert first == {"isFinal": False}
