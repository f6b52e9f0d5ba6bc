"""ChatClient against the real llm_stub (and a few scripted fakes) under uvicorn."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.upstream import (
    ChatClient,
    ChatEvent,
    ChatResult,
    ContentDelta,
    ToolCallDelta,
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamRemoteError,
    UpstreamSettings,
    UpstreamTimeout,
)
from llm_stub import Knobs, StubSettings, create_app
from tests.gateway.upstream.fakes import ScriptedStream
from tests.helpers import free_port, serve_app

pytestmark = pytest.mark.anyio

EXECUTOR = [{"role": "system", "content": "[agw:executor] run one step"}]
TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
    for n in ("code_interpreter", "deepsearch", "report")
]
FAST = StubSettings(knobs=Knobs(tokens_per_second=0), stall_seconds=30, retry_after_seconds=1)


OpenChat = Callable[[UpstreamSettings], AbstractAsyncContextManager[ChatClient]]


@pytest.fixture
def open_chat() -> OpenChat:
    """Opens a ChatClient (streams and ``complete`` share its one transport)."""

    @asynccontextmanager
    async def opened(settings: UpstreamSettings) -> AsyncIterator[ChatClient]:
        async with ChatClient(settings) as chat:
            yield chat

    return opened


def client_settings(url: str, **overrides: Any) -> UpstreamSettings:
    base = UpstreamSettings(
        llm_base_url=url + "/v1", llm_retry_backoff=0.01, llm_idle_timeout=5, llm_total_timeout=20
    )
    return replace(base, **overrides)


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    with serve_app(create_app(FAST)) as server:
        yield server.url


@pytest.fixture
def fresh_stub_url() -> Iterator[str]:
    """A stub of its own, for tests that arm faults or read counters."""
    with serve_app(create_app(FAST)) as server:
        yield server.url


async def collect(
    chat: ChatClient, messages: list[dict[str, Any]], **kwargs: Any
) -> list[ChatEvent]:
    events: list[ChatEvent] = []
    with anyio.fail_after(15):
        async with aclosing(chat.stream_chat(messages, **kwargs)) as stream:
            async for event in stream:
                events.append(event)
    return events


async def test_a_streamed_answer_yields_deltas_then_one_result_with_usage(
    stub_url: str, open_chat: OpenChat
) -> None:
    async with open_chat(client_settings(stub_url)) as chat:
        events = await collect(chat, [{"role": "user", "content": "Hello there, stub"}])
    *deltas, result = events
    assert isinstance(result, ChatResult)
    assert all(isinstance(d, ContentDelta) for d in deltas) and len(deltas) > 3
    assert "".join(d.text for d in deltas if isinstance(d, ContentDelta)) == result.content
    assert result.content.startswith("You asked: Hello there, stub")
    assert result.finish_reason == "stop"
    assert result.tool_calls == ()
    assert result.usage is not None and result.usage.prompt_tokens == 3
    assert result.usage.total_tokens == 3 + result.usage.completion_tokens


async def test_a_tool_call_is_assembled_from_its_argument_deltas(
    stub_url: str, open_chat: OpenChat
) -> None:
    messages = [*EXECUTOR, {"role": "user", "content": "Calculate the sum of 4, 5 and 6"}]
    async with open_chat(client_settings(stub_url)) as chat:
        events = await collect(chat, messages, tools=TOOLS)
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    result = events[-1]
    assert isinstance(result, ChatResult)
    assert len(deltas) > 5
    assert deltas[0].id and deltas[0].name == "code_interpreter" and deltas[0].arguments == ""
    assert all(d.id is None and d.name is None for d in deltas[1:])
    (call,) = result.tool_calls
    assert call.id == deltas[0].id and call.name == "code_interpreter"
    assert call.arguments == "".join(d.arguments for d in deltas)
    args = call.parsed_arguments()
    assert args["task"] == "Calculate the sum of 4, 5 and 6"
    assert "numbers = [4, 5, 6]" in args["code"]
    assert result.finish_reason == "tool_calls"
    assert result.to_message()["tool_calls"][0]["function"]["name"] == "code_interpreter"


async def test_complete_returns_the_same_answer_as_the_stream(
    stub_url: str, open_chat: OpenChat
) -> None:
    messages = [*EXECUTOR, {"role": "user", "content": "Search for the latest rust release"}]
    async with open_chat(client_settings(stub_url)) as chat:
        streamed = (await collect(chat, messages, tools=TOOLS))[-1]
        completed = await chat.complete(messages, TOOLS)
    assert isinstance(streamed, ChatResult)
    assert completed.content == streamed.content
    assert completed.tool_calls == streamed.tool_calls
    assert completed.finish_reason == "tool_calls"
    assert completed.usage == streamed.usage


async def test_a_500_before_the_first_token_is_retried_and_then_succeeds(
    fresh_stub_url: str,
    open_chat: OpenChat,
) -> None:
    async with httpx.AsyncClient(base_url=fresh_stub_url) as admin:
        armed = await admin.post("/_stub/faults", json={"fault": "500", "times": 1})
        assert armed.status_code == 200
        async with open_chat(client_settings(fresh_stub_url)) as chat:
            events = await collect(chat, [{"role": "user", "content": "retry me"}])
        stats = (await admin.get("/_stub/stats")).json()
    assert isinstance(events[-1], ChatResult)
    assert events[-1].content.startswith("You asked: retry me")
    assert stats["requests"] == 2
    assert stats["faults"] == {"500": 1}


async def test_repeated_500s_exhaust_the_retries_and_raise(
    fresh_stub_url: str, open_chat: OpenChat
) -> None:
    async with httpx.AsyncClient(base_url=fresh_stub_url) as admin:
        await admin.post("/_stub/faults", json={"fault": "500", "times": 10})
        async with open_chat(client_settings(fresh_stub_url, llm_max_retries=2)) as chat:
            with pytest.raises(UpstreamHTTPError) as caught:
                await collect(chat, [{"role": "user", "content": "hi"}])
        stats = (await admin.get("/_stub/stats")).json()
    assert caught.value.upstream_status == 500
    assert "injected fault" in caught.value.message
    assert stats["requests"] == 3


async def test_a_429_is_retried_after_its_retry_after(fresh_stub_url: str) -> None:
    async with httpx.AsyncClient(base_url=fresh_stub_url) as admin:
        await admin.post("/_stub/faults", json={"fault": "429", "times": 1})
        async with ChatClient(client_settings(fresh_stub_url)) as chat:
            started = time.monotonic()
            result = await chat.complete([{"role": "user", "content": "hi"}])
            elapsed = time.monotonic() - started
    assert result.content.startswith("You asked: hi")
    assert elapsed >= 0.9  # the stub answers Retry-After: 1; the back-off alone is ~10 ms


async def test_a_retry_after_beyond_the_total_limit_raises_at_once(fresh_stub_url: str) -> None:
    async with httpx.AsyncClient(base_url=fresh_stub_url) as admin:
        await admin.post("/_stub/faults", json={"fault": "429", "times": 1})
        async with ChatClient(client_settings(fresh_stub_url, llm_total_timeout=0.5)) as chat:
            with pytest.raises(UpstreamHTTPError) as caught:
                await chat.complete([{"role": "user", "content": "hi"}])
    assert caught.value.upstream_status == 429 and caught.value.retry_after == 1


async def test_a_stream_cut_mid_way_raises_after_partial_content(
    stub_url: str, open_chat: OpenChat
) -> None:
    events: list[ChatEvent] = []
    async with open_chat(client_settings(stub_url)) as chat:
        with pytest.raises(UpstreamError) as caught:
            with anyio.fail_after(15):
                messages = [{"role": "user", "content": "tell me a long story [[stub:fault=cut]]"}]
                async with aclosing(chat.stream_chat(messages)) as stream:
                    async for event in stream:
                        events.append(event)
    assert isinstance(caught.value, UpstreamProtocolError)
    assert caught.value.code == "upstream_error"
    assert events and all(isinstance(e, ContentDelta) for e in events)


async def test_a_cut_after_the_first_token_is_not_retried(
    fresh_stub_url: str, open_chat: OpenChat
) -> None:
    async with open_chat(client_settings(fresh_stub_url)) as chat:
        with pytest.raises(UpstreamProtocolError):
            await collect(
                chat, [{"role": "user", "content": "hi"}], headers={"X-Stub-Fault": "cut"}
            )
    async with httpx.AsyncClient(base_url=fresh_stub_url) as admin:
        assert (await admin.get("/_stub/stats")).json()["requests"] == 1


async def test_a_stalled_stream_hits_the_idle_timeout(stub_url: str, open_chat: OpenChat) -> None:
    settings = client_settings(stub_url, llm_idle_timeout=0.5)
    events: list[ChatEvent] = []
    async with open_chat(settings) as chat:
        with pytest.raises(UpstreamTimeout) as caught:
            with anyio.fail_after(10):
                messages = [{"role": "user", "content": "wait for it"}]
                async with aclosing(
                    chat.stream_chat(messages, headers={"X-Stub-Fault": "stall"})
                ) as s:
                    async for event in s:
                        events.append(event)
    assert caught.value.phase == "idle" and caught.value.code == "timeout"
    assert events  # some content arrived before the stall


async def test_a_slow_stream_hits_the_total_timeout(stub_url: str, open_chat: OpenChat) -> None:
    settings = client_settings(stub_url, llm_total_timeout=0.5)
    async with open_chat(settings) as chat:
        with pytest.raises(UpstreamTimeout) as caught:
            await collect(
                chat,
                [{"role": "user", "content": "a b c d e f g h"}],
                headers={"X-Stub-Tokens-Per-Second": "5"},
            )
    assert caught.value.phase == "total"


async def test_an_unreachable_server_is_retried_then_raises_a_connect_error(
    open_chat: OpenChat,
) -> None:
    settings = client_settings(f"http://127.0.0.1:{free_port()}", llm_max_retries=2)
    async with open_chat(settings) as chat:
        with pytest.raises(UpstreamConnectError):
            await collect(chat, [{"role": "user", "content": "hi"}])


async def test_a_client_error_is_not_retried(fresh_stub_url: str) -> None:
    async with ChatClient(client_settings(fresh_stub_url)) as chat:
        with pytest.raises(UpstreamHTTPError, match="non-empty list") as caught:
            await chat.complete([])
    assert caught.value.upstream_status == 400


async def test_the_api_key_is_sent_as_a_bearer_token(open_chat: OpenChat) -> None:
    seen: list[str | None] = []

    async def completions(request: Request) -> Response:
        seen.append(request.headers.get("authorization"))
        body = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
        return JSONResponse(body)

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    with serve_app(app) as server:
        async with open_chat(client_settings(server.url, llm_api_key="sk-secret")) as chat:
            result = await chat.complete([{"role": "user", "content": "hi"}])
            streamed = await collect(chat, [{"role": "user", "content": "hi"}])
    assert seen == ["Bearer sk-secret", "Bearer sk-secret"]
    assert result.content == "ok"
    assert streamed == [result]  # a server that ignores stream=true still gives one result


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


async def scripted(
    open_chat: OpenChat, frames: list[bytes], ending: str = "complete"
) -> list[ChatEvent]:
    async def completions(request: Request) -> Response:
        return ScriptedStream(frames, ending)  # type: ignore[arg-type]

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    with serve_app(app) as server:
        async with open_chat(client_settings(server.url, llm_max_retries=0)) as chat:
            return await collect(chat, [{"role": "user", "content": "hi"}])


async def test_frames_without_a_space_with_crlf_and_comments_are_understood(
    open_chat: OpenChat,
) -> None:
    frames = [
        b": keep-alive\r\n\r\n",
        b"data:" + orjson.dumps(chunk({"role": "assistant", "content": "Hel"})) + b"\r\n\r\n",
        b"data:" + orjson.dumps(chunk({"content": "lo"})) + b"\r\n\r\n",
        b"data: " + orjson.dumps(chunk({}, "stop")) + b"\r\n\r\n",
        b"data: "
        + orjson.dumps({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}),
        b"\r\n\r\ndata: [DONE]\r\n\r\n",
    ]
    *deltas, result = await scripted(open_chat, frames)
    assert deltas == [ContentDelta("Hel"), ContentDelta("lo")]
    assert isinstance(result, ChatResult)
    assert result.content == "Hello" and result.finish_reason == "stop"
    assert result.usage is not None and result.usage.total_tokens == 3


async def test_parallel_tool_calls_are_assembled_by_index(open_chat: OpenChat) -> None:
    def call(index: int, **fields: Any) -> bytes:
        return (
            b"data: " + orjson.dumps(chunk({"tool_calls": [{"index": index, **fields}]})) + b"\n\n"
        )

    frames = [
        call(0, id="a", type="function", function={"name": "f", "arguments": ""}),
        call(1, id="b", type="function", function={"name": "g", "arguments": '{"y"'}),
        call(0, function={"arguments": '{"x": 1'}),
        call(1, function={"arguments": ": 2}"}),
        call(0, function={"arguments": "}"}),
        b"data: " + orjson.dumps(chunk({}, "tool_calls")) + b"\n\n",
        b"data: [DONE]\n\n",
    ]
    result = (await scripted(open_chat, frames))[-1]
    assert isinstance(result, ChatResult)
    assert [(c.id, c.name, c.parsed_arguments()) for c in result.tool_calls] == [
        ("a", "f", {"x": 1}),
        ("b", "g", {"y": 2}),
    ]


async def test_an_error_chunk_in_the_stream_raises_a_remote_error(open_chat: OpenChat) -> None:
    frames = [b'data: {"error": {"message": "model overloaded"}}\n\n']
    with pytest.raises(UpstreamRemoteError, match="model overloaded"):
        await scripted(open_chat, frames)


async def test_a_stream_that_ends_without_done_or_finish_reason_raises(open_chat: OpenChat) -> None:
    frames = [b"data: " + orjson.dumps(chunk({"content": "Hel"})) + b"\n\n"]
    with pytest.raises(UpstreamProtocolError, match=r"before \[DONE\]"):
        await scripted(open_chat, frames)


async def test_a_chunk_that_is_not_json_raises_a_protocol_error(open_chat: OpenChat) -> None:
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        await scripted(open_chat, [b"data: {broken\n\n"])


async def test_a_proxy_from_the_environment_carries_streams_unless_no_proxy_excludes_the_host(
    stub_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "all_proxy", "no_proxy", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens
    settings = client_settings(stub_url, llm_max_retries=0)
    async with ChatClient(settings) as chat:
        with pytest.raises(UpstreamConnectError, match="cannot connect"):
            await collect(chat, [{"role": "user", "content": "hi"}])  # httpx tried the proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with ChatClient(settings) as chat:
        events = await collect(chat, [{"role": "user", "content": "hi"}])
    assert isinstance(events[-1], ChatResult)


# -- stream_text: the same stream, its text handed to a callback -------------------------------


async def collect_text(
    chat: ChatClient, messages: list[dict[str, Any]], texts: list[str] | None = None, **kw: Any
) -> tuple[list[str], ChatResult]:
    pieces = [] if texts is None else texts
    with anyio.fail_after(15):
        result = await chat.stream_text(messages, pieces.append, **kw)
    return pieces, result


async def test_stream_text_hands_over_the_same_text_as_the_events(
    stub_url: str, open_chat: OpenChat
) -> None:
    messages = [{"role": "user", "content": "Hello there, stub"}]
    async with open_chat(client_settings(stub_url)) as chat:
        *deltas, streamed = await collect(chat, messages)
        texts, result = await collect_text(chat, messages)
    assert texts == [d.text for d in deltas if isinstance(d, ContentDelta)] and len(texts) > 3
    assert result == streamed and "".join(texts) == result.content


async def test_stream_text_assembles_tool_calls_into_the_result_only(
    stub_url: str, open_chat: OpenChat
) -> None:
    messages = [*EXECUTOR, {"role": "user", "content": "Calculate the sum of 4, 5 and 6"}]
    async with open_chat(client_settings(stub_url)) as chat:
        streamed = (await collect(chat, messages, tools=TOOLS))[-1]
        texts, result = await collect_text(chat, messages, tools=TOOLS)
    assert result == streamed and result.finish_reason == "tool_calls"
    assert "".join(texts) == result.content  # the thought before the call, if any
    assert result.tool_calls[0].parsed_arguments()["task"] == "Calculate the sum of 4, 5 and 6"


async def test_stream_text_retries_a_500_before_the_first_piece(
    fresh_stub_url: str, open_chat: OpenChat
) -> None:
    async with httpx.AsyncClient(base_url=fresh_stub_url) as admin:
        await admin.post("/_stub/faults", json={"fault": "500", "times": 1})
        async with open_chat(client_settings(fresh_stub_url)) as chat:
            texts, result = await collect_text(chat, [{"role": "user", "content": "retry me"}])
        stats = (await admin.get("/_stub/stats")).json()
    assert "".join(texts) == result.content and result.content.startswith("You asked: retry me")
    assert stats["requests"] == 2


async def test_stream_text_does_not_retry_a_cut_after_the_first_piece(
    fresh_stub_url: str, open_chat: OpenChat
) -> None:
    texts: list[str] = []
    async with open_chat(client_settings(fresh_stub_url)) as chat:
        with pytest.raises(UpstreamProtocolError):
            await collect_text(
                chat, [{"role": "user", "content": "hi"}], texts, headers={"X-Stub-Fault": "cut"}
            )
    assert texts  # the pieces before the cut were handed over, once
    async with httpx.AsyncClient(base_url=fresh_stub_url) as admin:
        assert (await admin.get("/_stub/stats")).json()["requests"] == 1


async def test_stream_text_hits_the_idle_limit_of_a_stalled_stream(
    stub_url: str, open_chat: OpenChat
) -> None:
    texts: list[str] = []
    async with open_chat(client_settings(stub_url, llm_idle_timeout=0.5)) as chat:
        with pytest.raises(UpstreamTimeout) as caught:
            messages = [{"role": "user", "content": "wait for it"}]
            await collect_text(chat, messages, texts, headers={"X-Stub-Fault": "stall"})
    assert caught.value.phase == "idle" and texts


async def test_what_the_text_callback_raises_ends_the_stream_and_the_next_one_works(
    stub_url: str, open_chat: OpenChat
) -> None:
    class Enough(Exception):
        pass

    seen: list[str] = []

    def take_two(text: str) -> None:
        seen.append(text)
        if len(seen) == 2:
            raise Enough

    messages = [{"role": "user", "content": "tell me a long story"}]
    async with open_chat(client_settings(stub_url)) as chat:
        with pytest.raises(Enough):
            with anyio.fail_after(15):
                await chat.stream_text(messages, take_two)
        texts, result = await collect_text(chat, messages)
    assert len(seen) == 2 and texts[:2] == seen  # not retried: the exception is the caller's
    assert "".join(texts) == result.content


async def test_stream_text_raises_an_error_chunk_and_a_stream_without_an_end(
    open_chat: OpenChat,
) -> None:
    async def text_of(frames: list[bytes]) -> list[str]:
        async def completions(request: Request) -> Response:
            return ScriptedStream(frames, "complete")  # type: ignore[arg-type]

        app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
        with serve_app(app) as server:
            async with open_chat(client_settings(server.url, llm_max_retries=0)) as chat:
                return (await collect_text(chat, [{"role": "user", "content": "hi"}]))[0]

    with pytest.raises(UpstreamRemoteError, match="model overloaded"):
        await text_of([b'data: {"error": {"message": "model overloaded"}}\n\n'])
    with pytest.raises(UpstreamProtocolError, match=r"before \[DONE\]"):
        await text_of([b"data: " + orjson.dumps(chunk({"content": "Hel"})) + b"\n\n"])
