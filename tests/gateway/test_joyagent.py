"""genie-backend's projection of a task's messages, fed message by message.

Today's messages and DESIGN §3's live-text turns (``tool_thought`` deltas whose final frame names
what the text was) must give JoyAgent's UI the same thing: one growing thought per model turn,
a ``task_summary`` with its ``resultMap``, the answer as the ``result`` only.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.protocol import TaskRecord
from gateway.routes._joyagent import AgentResponses, EventProjector, gpt_packet


def test_the_event_projector_starts_a_task_id_per_task_only_in_plan_mode() -> None:
    def message(kind: str) -> dict[str, Any]:
        return {"messageId": kind, "messageType": kind, "isFinal": True, "plan": {"steps": []}}

    plan_mode, react_mode = EventProjector(react_mode=False), EventProjector(react_mode=True)
    kinds = ["plan", "task", "tool_thought", "task", "plan"]
    planned = [plan_mode.event(message(k)) for k in kinds]
    reacted = [react_mode.event(message(k)) for k in kinds[1:]]

    assert planned[0]["messageType"] == "plan" and "taskId" not in planned[0]
    assert planned[1]["taskId"] == planned[2]["taskId"] != planned[3]["taskId"]
    assert [e["taskOrder"] for e in planned[1:]] == [1, 2, 1, 2]
    assert len({e["taskId"] for e in reacted}) == 1
    assert [e["taskOrder"] for e in reacted] == [1, 2, 3, 4]


def contract_turns(kind: str) -> list[dict[str, Any]]:
    """DESIGN §3's live text: a turn's deltas as ``tool_thought``, its final frame typed by what
    the text was (``tool_thought`` before tool calls, ``kind`` for the answer)."""

    def frame(mid: str, mtype: str, text: str, final: bool) -> dict[str, Any]:
        field = {"tool_thought": "toolThought", "agent_stream": "result"}.get(mtype, "taskSummary")
        return {"messageId": mid, "messageType": mtype, "isFinal": final, field: text}

    return [
        {"messageId": "s", "messageType": "task", "isFinal": True, "task": "step one"},
        frame("t1", "tool_thought", "I will ", False),
        frame("t1", "tool_thought", "run code", False),
        frame("t1", "tool_thought", "I will run code", True),
        {
            "messageId": "c",
            "messageType": "code",
            "isFinal": True,
            "resultMap": {"codeOutput": "42", "fileInfo": [{"fileName": "out.csv"}]},
        },
        {"messageId": "r", "messageType": "tool_result", "isFinal": True, "toolResult": {}},
        frame("t2", "tool_thought", "It is ", False),
        frame("t2", "tool_thought", "42.", False),
        frame("t2", kind, "It is 42.", True),
    ]


@pytest.mark.parametrize("answer_type", ["agent_stream", "task_summary"])
def test_live_turns_stream_as_one_thought_each_whatever_type_the_final_frame_names(
    answer_type: str,
) -> None:
    responses = AgentResponses(agent_type=3)
    out = [r for m in contract_turns(answer_type) for r in responses.project(m)]

    assert all(isinstance(r["resultMap"], dict) and r["resultMap"]["agentType"] == 3 for r in out)
    assert "tool_result" not in [r["messageType"] for r in out], "the code item shows the work"
    turns: dict[str, list[dict[str, Any]]] = {}
    for response in out:
        if response["messageType"] == "tool_thought":
            turns.setdefault(response["messageId"], []).append(response)
    assert [[r["isFinal"] for r in t] for t in turns.values()] == [[False, False, True]] * 2
    assert turns["t2"][-1]["toolThought"] == "It is 42."
    summaries = [r for r in out if r["messageType"] == "task_summary"]
    if answer_type == "task_summary":
        (summary,) = summaries
        assert summary["taskSummary"] == "It is 42."
        assert summary["resultMap"] == {
            "taskSummary": "It is 42.",
            "fileList": [{"fileName": "out.csv"}],
            "agentType": 3,
        }
        assert out[-1] is summary, "the summary item follows its settled thought"
    else:
        assert summaries == [] and out[-1]["messageType"] == "tool_thought"


def test_ui_packets_count_message_orders_per_task_and_stream_type() -> None:
    record = TaskRecord(task_id="task-1", request_id="req-1", agent_type=5, query="q")
    responses, projector = AgentResponses(agent_type=5), EventProjector(react_mode=True)
    messages = contract_turns("agent_stream")[1:]
    packets = [
        gpt_packet(record, shown, event)
        for m in messages
        for r in responses.project(m)
        for shown, event in projector.events(r)
    ]

    events = [p["resultMap"]["eventData"] for p in packets]
    assert [(e["resultMap"]["messageType"], e["messageOrder"]) for e in events] == [
        ("tool_thought", 1),
        ("tool_thought", 2),
        ("tool_thought", 3),
        ("code", 1),
        ("tool_thought", 4),
        ("tool_thought", 5),
        ("tool_thought", 6),
    ]
    assert all(p["resultMap"]["agentType"] == "5" for p in packets)


def test_a_streamed_deep_search_ends_with_an_empty_answer_as_genie_tool_sends_it() -> None:
    def search(final: bool, answer: str) -> dict[str, Any]:
        payload = {"messageType": "report", "answer": answer, "isFinal": final}
        return {
            "messageId": "ds",
            "messageType": "deep_search",
            "isFinal": final,
            "resultMap": payload,
        }

    streamed, replayed = AgentResponses(agent_type=5), AgentResponses(agent_type=5)
    frames = (search(False, "Light "), search(False, "energy."), search(True, "Light energy."))
    live = [r for m in frames for r in streamed.project(m)]
    compacted = replayed.project(search(True, "Light energy."))

    assert "".join(r["resultMap"]["answer"] for r in live) == "Light energy.", "the UI's text"
    assert live[-1]["isFinal"] and live[-1]["resultMap"]["answer"] == ""
    assert compacted[0]["resultMap"]["answer"] == "Light energy.", "a final frame read alone"


def plan_update(message_id: str, *status: str) -> dict[str, Any]:
    plan = {"title": "Two steps", "steps": ["a", "b"], "stepStatus": list(status), "notes": []}
    return {"messageId": message_id, "messageType": "plan", "isFinal": True, "plan": plan}


def ui_events(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The deep-think UI's eventData of ``messages``, as the UI endpoint sends them."""
    responses, projector = AgentResponses(agent_type=3), EventProjector(react_mode=False)
    return [e for m in messages for r in responses.project(m) for _, e in projector.events(r)]


def test_a_plan_update_between_steps_gives_way_to_the_next_start_or_goes_first() -> None:
    task = {"messageId": "t", "messageType": "task", "isFinal": True, "task": "a"}
    start = [plan_update("p0", "not_started", "not_started"), plan_update("p1", "in_progress")]
    start[1]["plan"]["stepStatus"].append("not_started")
    done = plan_update("p2", "completed", "not_started")
    failed = {"messageId": "x", "messageType": "error", "finish": True, "error": {"code": "c"}}

    moved_on = ui_events([*start, task, done, plan_update("p3", "completed", "in_progress")])
    stopped = ui_events([*start, task, done, failed])

    assert [("taskId" in e, e["messageId"]) for e in moved_on] == [
        (False, "p0"),
        (False, "p1"),  # before any step: the plan box, not an item of a step
        (True, "t"),
        (True, "p3"),  # one item in the finished step: the update that starts the next one
    ]
    assert [e["messageId"] for e in stopped] == ["p0", "p1", "t", "p2", "x"], "never lost"
    assert stopped[-1]["resultMap"]["messageType"] == "result"


def test_a_step_summary_read_without_its_streamed_thought_keeps_its_text() -> None:
    summary = {"messageId": "s", "messageType": "task_summary", "isFinal": True}
    events = ui_events([{**summary, "taskSummary": "It is 42."}])

    (event,) = events
    assert event["resultMap"]["resultMap"]["taskSummary"] == "It is 42."


@pytest.mark.parametrize("title", ["Two steps", " "])
def test_every_step_of_a_plan_has_a_stage_the_ui_can_show_as_a_heading(title: str) -> None:
    message = plan_update("p", "not_started", "not_started")
    message["plan"]["title"] = title

    (response,) = AgentResponses(agent_type=3).project(message)

    stages = response["plan"]["stages"]
    assert stages == (["Two steps"] * 2 if title.strip() else ["a", "b"]), "never empty"
