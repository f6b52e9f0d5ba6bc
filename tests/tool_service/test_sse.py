"""SSE conventions shared by the tools: stream modes, heartbeats, errors, ``[DONE]``."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.helpers import free_port, wait_http_ok
from tests.tool_service.fake_llm import FakeLLM, Reply
from tests.tool_service.support import Service, ServiceFactory
from tool_service.sse import StreamMode, batch_text

CHUNKS = [f"c{index:02d} " for index in range(12)]


def _report(service: Service, **extra: object) -> list:
    body = {"requestId": "sse", "task": "write", "fileName": "out", **extra}
    return service.stream("/v1/tool/report", body)


def _deltas(events: list) -> list[str]:
    return [e["data"] for e in events if isinstance(e, dict) and e.get("isFinal") is False]


def test_general_mode_sends_every_chunk(service: Service, fake_llm: FakeLLM) -> None:
    fake_llm.reply = Reply(chunks=CHUNKS)
    events = _report(service, streamMode={"mode": "general"})
    assert _deltas(events) == CHUNKS
    assert events[-2]["data"] == "".join(CHUNKS)
    assert events[-1] == "[DONE]"


def test_token_mode_sends_every_n_chunks_and_flushes_the_leftover(
    service: Service, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = Reply(chunks=CHUNKS)
    events = _report(service, streamMode={"mode": "token", "token": 5})
    deltas = _deltas(events)
    assert deltas == ["".join(CHUNKS[0:5]), "".join(CHUNKS[5:10]), "".join(CHUNKS[10:12])]
    assert events[-2]["data"] == "".join(CHUNKS)


def test_time_mode_batches_what_arrived_within_each_interval(
    service: Service, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = Reply(chunks=CHUNKS, delay=0.1)  # about 1.1 s of streaming
    arrivals: list[float] = []
    started = time.monotonic()
    body = {"requestId": "t", "task": "w", "streamMode": {"mode": "time", "time": 0.35}}
    with service.client.stream("POST", "/v1/tool/report", json=body) as response:
        for line in response.iter_lines():
            if '"isFinal":false' in line:
                arrivals.append(time.monotonic() - started)
    assert 2 <= len(arrivals) <= 5  # batches, neither one per chunk nor a single blob
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap > 0.2 for gap in gaps[:-1])  # the last batch is the flushed leftover


def test_heartbeats_are_sent_while_the_tool_is_silent(
    make_service: ServiceFactory, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = Reply(chunks=["late"], first_delay=0.8)
    with make_service(HEARTBEAT_INTERVAL="0.2") as service:
        events = _report(service)
    first_data = next(i for i, e in enumerate(events) if isinstance(e, dict))
    assert events[:first_data].count("heartbeat") >= 2
    assert events[-1] == "[DONE]"


def test_heartbeats_keep_their_pace_while_the_tool_streams_as_genie_tool_does(
    make_service: ServiceFactory, fake_llm: FakeLLM
) -> None:
    # genie-tool's EventSourceResponse pings every interval, data or not; so do we.
    fake_llm.reply = Reply(chunks=CHUNKS, delay=0.1)  # a chunk every 0.1 s, about 1.1 s
    with make_service(HEARTBEAT_INTERVAL="0.25") as service:
        events = _report(service)
    data = [i for i, e in enumerate(events) if isinstance(e, dict)]
    assert "heartbeat" in events[data[0] : data[-1]]
    assert events[-1] == "[DONE]"


def test_the_stream_is_framed_as_data_lines_ending_in_one_newline_pair(
    make_service: ServiceFactory, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = Reply(chunks=CHUNKS[:3], first_delay=0.5)
    body = {"requestId": "bytes", "task": "write", "fileName": "out"}
    with (
        make_service(HEARTBEAT_INTERVAL="0.2") as service,
        service.client.stream("POST", "/v1/tool/report", json=body) as response,
    ):
        raw = response.read()
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache, no-transform"
    assert response.headers["x-accel-buffering"] == "no"
    assert b"\r" not in raw
    events = raw.split(b"\n\n")
    assert events[-1] == b""  # the body ends with a blank line
    assert b"data: heartbeat" in events
    assert events[-2] == b"data: [DONE]"
    for event in events[:-1]:
        assert event.startswith(b"data: ") and b"\n" not in event, event
        assert event in (b"data: heartbeat", b"data: [DONE]") or event.startswith(b"data: {")


def test_a_stream_in_flight_when_the_service_is_stopped_still_ends_with_done(
    fake_llm: FakeLLM, tmp_path: Path
) -> None:
    fake_llm.reply = Reply(chunks=CHUNKS, delay=0.15)  # about 1.8 s of streaming
    port = free_port()
    env = {
        **os.environ,
        "LLM_BASE_URL": fake_llm.url,
        "LLM_API_KEY": "sk-test-key",
        "LLM_MODEL": "fake-model",
        "FILE_ROOT": str(tmp_path / "files"),
        "SANDBOX_ROOT": str(tmp_path / "sandboxes"),
    }
    command = [sys.executable, "-m", "gateway.cli", "serve", "tool_service", "--port", str(port)]
    process = subprocess.Popen(command, env=env)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health", proc=process)
        events: list = []
        body = {"requestId": "stop", "task": "write", "fileName": "out"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20.0) as client:
            with client.stream("POST", "/v1/tool/report", json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {") and not events:
                        process.send_signal(signal.SIGTERM)  # mid-stream
                    if line.startswith("data: "):
                        data = line.removeprefix("data: ")
                        events.append(data if data[0] != "{" else orjson.loads(data))
        assert events[-1] == "[DONE]"
        assert events[-2]["isFinal"] is True
        assert _deltas(events) == CHUNKS
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        process.kill()
        process.wait(timeout=10)


def test_a_tool_error_ends_with_an_error_frame_then_done(
    service: Service, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = Reply(status=500)
    events = _report(service)
    assert events[-1] == "[DONE]"
    assert events[-2] == {
        "requestId": "sse",
        "error": {"code": "upstream_error", "message": events[-2]["error"]["message"]},
        "isFinal": True,
    }
    assert "500" in events[-2]["error"]["message"]


def test_an_error_in_the_middle_of_a_stream_still_ends_with_an_error_frame(
    service: Service, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = Reply(chunks=CHUNKS, garbage_after=3)
    events = _report(service)
    assert _deltas(events) == CHUNKS[:3]
    assert events[-2]["error"]["code"] == "upstream_error"
    assert events[-1] == "[DONE]"


def test_a_silent_llm_is_cut_off_by_the_read_timeout(
    make_service: ServiceFactory, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = Reply(chunks=["never"], first_delay=3)
    with make_service(LLM_READ_TIMEOUT="0.3") as service:
        started = time.monotonic()
        events = _report(service)
        assert time.monotonic() - started < 2.5
    assert events[-2]["error"]["code"] == "timeout"
    assert events[-1] == "[DONE]"


async def _chunks(items: list[str]) -> AsyncIterator[str]:
    for item in items:
        yield item


@pytest.mark.anyio
async def test_batch_text_groups_tokens_and_flushes_the_leftover() -> None:
    mode = StreamMode(mode="token", token=4)
    batches = [batch async for batch in batch_text(_chunks(list("abcdefghij")), mode)]
    assert batches == ["abcd", "efgh", "ij"]
    general = [batch async for batch in batch_text(_chunks(["a", "", "b"]), StreamMode())]
    assert general == ["a", "b"]
