"""The relay agent (agentType 1): one chat completion streamed through the log."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.protocol import AgentRequest, TaskStatus
from tests.gateway.agents.support import check_streaming_rule, run_task

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
