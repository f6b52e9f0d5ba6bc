"""Live text (DESIGN §3): a model turn's first token reaches an SSE reader before the turn ends.

The model here is a small fake that streams the first piece of every turn and then waits,
holding the rest of the turn back until the test has seen that piece on the gateway's SSE
stream. An agent that held a turn's text until the turn ended would never show it: the model's
wait would time out and the turn would be marked as held back.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.upstream import UpstreamSettings
from tests.gateway.agents.support import check_streaming_rule, gateway_settings
from tests.helpers import serve_app

pytestmark = pytest.mark.anyio

GATE_TIMEOUT = 10.0
FIRST, REST = "The first piece", " and the rest of the turn."


@dataclass
class GatedModel:
    """Streams ``FIRST`` at once and ``REST`` only after :meth:`seen` was called for the turn."""

    gate: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    turns: int = 0
    held_back: list[int] = field(default_factory=list)  # turns whose first piece nobody saw

    def seen(self) -> None:
        """The reader saw a turn's first piece: let that turn finish."""
        self.gate.release()

    def app(self) -> Starlette:
        async def completions(request: Request) -> StreamingResponse:
            await request.body()
            self.turns += 1
            turn = self.turns
            return StreamingResponse(self._chunks(turn), media_type="text/event-stream")

        return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])

    async def _chunks(self, turn: int) -> AsyncIterator[bytes]:
        yield _chunk({"content": FIRST})
        if not await anyio.to_thread.run_sync(self.gate.acquire, True, GATE_TIMEOUT):
            self.held_back.append(turn)
        yield _chunk({"content": REST})
        yield _chunk({}, finish="stop")
        yield b"data: [DONE]\n\n"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return (
        b"data: " + orjson.dumps({"object": "chat.completion.chunk", "choices": [choice]}) + b"\n\n"
    )


@pytest.fixture
def gated() -> Iterator[tuple[GatedModel, str]]:
    """The gated model and a gateway whose agents talk to it (no tool is ever called)."""
    model = GatedModel()
    with serve_app(model.app()) as llm:
        upstream = replace(
            UpstreamSettings(),
            llm_base_url=llm.url + "/v1",
            llm_max_retries=0,
            tool_service_url="http://127.0.0.1:9",
            mcp_server_urls=(),
        )
        with serve_app(create_app(gateway_settings(upstream))) as gateway:
            yield model, gateway.url


async def follow(model: GatedModel, url: str, agent_type: int) -> list[dict[str, Any]]:
    """Run a task, releasing each turn of the model once its first piece was read on SSE."""
    messages: list[dict[str, Any]] = []
    released: set[str] = set()
    body = {"query": "say something", "agentType": agent_type}
    headers = {"Accept": "text/event-stream"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        with anyio.fail_after(40):
            async with client.stream("POST", "/api/tasks", json=body, headers=headers) as events:
                async for line in events.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    message = orjson.loads(line[5:])
                    messages.append(message)
                    if not message["isFinal"] and message["messageId"] not in released:
                        released.add(message["messageId"])
                        model.seen()
    return messages


async def test_a_react_answer_reaches_the_reader_while_the_model_is_still_writing_it(
    gated: tuple[GatedModel, str],
) -> None:
    model, url = gated
    messages = await follow(model, url, 5)

    assert model.held_back == [], "the answer's first piece was held until the turn ended"
    check_streaming_rule(messages[1:-1])
    answer = [m for m in messages if m["messageType"] in ("tool_thought", "agent_stream")]
    assert [m["messageType"] for m in answer] == ["tool_thought", "tool_thought", "agent_stream"]
    assert [m.get("toolThought") for m in answer[:2]] == [FIRST, REST]
    assert answer[-1]["result"] == FIRST + REST == messages[-1]["result"]
    assert len({m["messageId"] for m in answer}) == 1


async def test_every_plan_and_execute_turn_reaches_the_reader_while_the_model_writes_it(
    gated: tuple[GatedModel, str],
) -> None:
    model, url = gated
    messages = await follow(model, url, 3)

    assert model.turns == 3  # planner, the one step's executor, the summary
    assert model.held_back == []
    check_streaming_rule(messages[1:-1])
    finals = [m for m in messages if m["isFinal"] and m["messageType"] != "status"]
    kinds = [m["messageType"] for m in finals]
    planned = ["plan_thought", "plan", "plan", "task"]
    assert kinds == [*planned, "task_summary", "plan", "agent_stream", "result"]
    assert messages[-1]["result"] == FIRST + REST
