"""The relay agent (agentType 1): one chat completion streamed through the log."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.agents.relay import relay_agent
from gateway.protocol import AgentRequest, StoredMessage, TaskStatus
from gateway.store import MemoryStore
from tests.gateway.agents.support import check_streaming_rule, direct_context, run_task

pytestmark = pytest.mark.anyio


async def test_relay_streams_the_models_answer_as_deltas_then_one_final_frame(
    services: dict[str, Any],
) -> None:
    record, messages = await run_task(
        services, AgentRequest(query="tell me about stream relays", agentType=1)
    )
    assert record.status is TaskStatus.COMPLETED, record
    check_streaming_rule(messages)
    answer = [m for m in messages if m["messageType"] == "agent_stream"]
    assert len(answer) > 2 and answer[-1]["isFinal"] is True
    assert "".join(m["result"] for m in answer[:-1]) == answer[-1]["result"]
    assert "stream relays" in answer[-1]["result"]
    assert messages[-1]["messageType"] == "result"
    assert messages[-1]["result"] == answer[-1]["result"] == record.result


async def test_a_store_that_cannot_append_without_waiting_still_gets_every_delta_in_order(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with direct_context(services, "tell me about stream relays", 1) as (ctx, store):
        waited: list[str] = []

        async def append(task_id: str, body: dict[str, Any]) -> StoredMessage:
            waited.append(body["result"])
            await asyncio.sleep(0.001)  # a store that really waits
            return MemoryStore.append_now(store, task_id, body)

        monkeypatch.setattr(store, "append_now", lambda task_id, body: None)
        monkeypatch.setattr(store, "append", append)
        await relay_agent(ctx)
        messages = [m.json() for m in await store.read(ctx.task_id, 0, 1000)]
    check_streaming_rule(messages)
    deltas = [m["result"] for m in messages if not m["isFinal"]]
    assert len(deltas) > 2 and waited[: len(deltas)] == deltas
    assert "".join(deltas) == messages[-1]["result"] == ctx.printer.outcome.result  # type: ignore[union-attr]
