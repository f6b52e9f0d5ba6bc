"""The stub over HTTP: the OpenAI wire format, knobs, faults and the admin endpoints."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from llm_stub import Knobs, StubSettings, create_app
from tests.helpers import serve_app, spawn_service

FAST = StubSettings(knobs=Knobs(tokens_per_second=0), stall_seconds=30)
PLANNER = [
    {"role": "system", "content": "[agw:planner]"},
    {"role": "user", "content": "Search the web and write a report"},
]
PLANNING = [{"type": "function", "function": {"name": "planning", "parameters": {}}}]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve_app(create_app(FAST)) as server:
        yield server.url


@pytest.fixture
def fresh_url() -> Iterator[str]:
    with serve_app(create_app(FAST)) as server:
        yield server.url


def chat(url: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=10)


def sse_payloads(response: httpx.Response) -> list[str]:
    frames = response.text.split("\n\n")
    assert frames[-1] == ""
    assert all(f.startswith("data: ") for f in frames[:-1])
    return [f[len("data: ") :] for f in frames[:-1]]


def test_a_streamed_completion_is_chunks_then_usage_then_done(url: str) -> None:
    body = {
        "model": "anything",
        "messages": PLANNER,
        "tools": PLANNING,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = chat(url, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    *payloads, done = sse_payloads(response)
    assert done == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["model"] == "anything"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])
    finish = chunks[-2]["choices"][0]
    assert finish["finish_reason"] == "tool_calls" and finish["delta"] == {}
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    first, *rest = calls
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"] == {"name": "planning", "arguments": ""}
    assert all(set(c) == {"index", "function"} for c in rest)
    arguments = orjson.loads("".join(c["function"]["arguments"] for c in rest))
    assert arguments["command"] == "create" and len(arguments["steps"]) == 2


def test_usage_is_left_out_of_the_stream_unless_asked_for(url: str) -> None:
    response = chat(url, {"messages": [{"role": "user", "content": "hi"}], "stream": True})
    *payloads, done = sse_payloads(response)
    assert done == "[DONE]"
    assert all("usage" not in orjson.loads(p) for p in payloads)


def test_a_non_streamed_completion_is_one_chat_completion(url: str) -> None:
    response = chat(url, {"messages": PLANNER, "tools": PLANNING})
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion" and data["model"] == "stub"
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"].startswith("To answer")
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "planning"
    assert data["usage"]["prompt_tokens"] == 8  # words of all messages


def test_the_same_request_gives_the_same_answer(url: str) -> None:
    first, second = chat(url, {"messages": PLANNER}).json(), chat(url, {"messages": PLANNER}).json()
    assert first["id"] == second["id"] and first["choices"] == second["choices"]


def test_models_and_health_answer(url: str) -> None:
    models = httpx.get(url + "/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "stub"
    assert httpx.get(url + "/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"messages": []}', b'{"messages": [{"content": "x"}]}'],
)
def test_an_invalid_request_is_a_400_in_openai_format(url: str, body: bytes) -> None:
    response = httpx.post(url + "/v1/chat/completions", content=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_bad_knob_header_is_a_400(url: str) -> None:
    response = chat(url, {"messages": PLANNER}, **{"X-Stub-Fault": "explode"})
    assert response.status_code == 400 and "explode" in response.json()["error"]["message"]


def test_chunk_size_header_groups_words(url: str) -> None:
    body = {
        "messages": [{"role": "user", "content": "one two three four five six"}],
        "stream": True,
    }
    small = sse_payloads(chat(url, body, **{"X-Stub-Chunk-Size": "1"}))
    large = sse_payloads(chat(url, body, **{"X-Stub-Chunk-Size": "4"}))
    assert len(large) < len(small)


def test_ttft_header_delays_the_first_chunk(url: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    started = time.monotonic()
    response = chat(url, body, **{"X-Stub-TTFT-Ms": "300"})
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_tokens_per_second_paces_the_stream(url: str) -> None:
    body = {"messages": [{"role": "user", "content": "a b c d e f g h i j"}], "stream": True}
    started = time.monotonic()
    chat(url, body, **{"X-Stub-Tokens-Per-Second": "40"})
    # "You asked: a … j" plus the closing sentence is about 25 words: ~0.6 s at 40/s
    assert time.monotonic() - started >= 0.4


def test_an_armed_fault_fails_the_next_requests_then_clears(fresh_url: str) -> None:
    armed = httpx.post(fresh_url + "/_stub/faults", json={"fault": "500", "times": 2})
    assert armed.json()["armed"] == {"fault": "500", "remaining": 2}
    statuses = [chat(fresh_url, {"messages": PLANNER}).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    stats = httpx.get(fresh_url + "/_stub/stats").json()
    assert stats["requests"] == 3 and stats["faults"] == {"500": 2}
    assert stats["armed"] == {"fault": None, "remaining": 0}


def test_a_fault_can_be_disarmed(fresh_url: str) -> None:
    httpx.post(fresh_url + "/_stub/faults", json={"fault": "429", "times": 5})
    httpx.delete(fresh_url + "/_stub/faults")
    assert chat(fresh_url, {"messages": PLANNER}).status_code == 200


@pytest.mark.parametrize("body", [{"fault": "boom"}, {"fault": "500", "times": -1}, ["x"]])
def test_an_invalid_fault_request_is_a_400(fresh_url: str, body: Any) -> None:
    assert httpx.post(fresh_url + "/_stub/faults", json=body).status_code == 400


def test_a_429_fault_carries_retry_after(url: str) -> None:
    response = chat(url, {"messages": PLANNER}, **{"X-Stub-Fault": "429"})
    assert response.status_code == 429 and response.headers["retry-after"] == "1"


def test_a_cut_directive_truncates_the_stream_without_done(url: str) -> None:
    text = "a long answer please [[stub:fault=cut]]"
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream(
            "POST",
            url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": text}], "stream": True},
            timeout=10,
        ) as response:
            for piece in response.iter_bytes():
                received += piece
    assert received.startswith(b"data: ") and b"[DONE]" not in received


def test_a_cut_non_streamed_completion_is_a_truncated_body(url: str) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        chat(url, {"messages": PLANNER}, **{"X-Stub-Fault": "cut"})


def test_a_stall_sends_some_chunks_then_goes_silent(url: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    received = b""
    with pytest.raises(httpx.ReadTimeout):
        timeout = httpx.Timeout(10, read=0.5)
        with httpx.stream(
            "POST",
            url + "/v1/chat/completions",
            json=body,
            headers={"X-Stub-Fault": "stall"},
            timeout=timeout,
        ) as response:
            for piece in response.iter_bytes():
                received += piece
    assert received.count(b"data: ") >= 1 and b"[DONE]" not in received


def test_settings_are_read_from_the_environment() -> None:
    settings = StubSettings.from_env(
        {
            "STUB_TOKENS_PER_SECOND": "0",
            "STUB_TTFT_MS": "50",
            "STUB_CHUNK_SIZE": "3",
            "STUB_FAULT": "stall",
        }
    )
    assert settings.knobs == Knobs(tokens_per_second=0, ttft_ms=50, chunk_size=3, fault="stall")
    assert StubSettings.from_env({}).knobs == Knobs(200, 0, 1, None)
    with pytest.raises(ValueError):
        StubSettings.from_env({"STUB_FAULT": "sometimes"})


def test_agent_gateway_serve_llm_stub_answers_on_health() -> None:
    with spawn_service("llm_stub", env={"STUB_TOKENS_PER_SECOND": "0"}, health="/health") as base:
        response = httpx.post(
            base + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
    assert response.json()["choices"][0]["message"]["content"].startswith("You asked: hi")


def test_the_executor_answers_done_after_a_tool_result_over_http(url: str) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "deepsearch", "arguments": "{}"}}
    messages = [
        {"role": "system", "content": "[agw:executor]"},
        {"role": "user", "content": "Search for tea"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "Oolong is great."},
    ]
    tools = [{"type": "function", "function": {"name": "deepsearch", "parameters": {}}}]
    choice = chat(url, {"messages": messages, "tools": tools}).json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "Done: Oolong is great."}
