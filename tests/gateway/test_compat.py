"""The JoyAgent-compatible endpoints against a real gateway, real upstreams and real clients.

The UI endpoint is read with ``@microsoft/fetch-event-source`` under node (what JoyAgent's UI
uses); ``/AutoAgent`` with raw httpx lines, to check the framing byte for byte.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from gateway.app import create_app
from tests.gateway.agents.support import gateway_settings, running_upstreams
from tests.gateway.compat_client import (
    GPT,
    ORIGIN,
    Gateway,
    NodeRun,
    assert_orders_count_per_task_and_stream_type,
    fetch_event_source,
    merge_like_the_ui,
)
from tests.helpers import serve_app

PACKET_FIELDS = {
    "status", "response", "responseAll", "finished", "useTimes", "useTokens", "resultMap",
    "responseType", "traceId", "reqId", "encrypted", "query", "messages", "packageType",
    "errorMsg",
}  # fmt: skip
PLAN_QUERY = "calculate the sum of 3 and 4, then search for photosynthesis, then echo hi"
SLOW = "[[stub:tps=40]]"  # paces the stub so the heartbeat clock (0.2 s) ticks during a run
CUT = "[[stub:fault=cut]]"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway app with the built-in agents, CORS for ORIGIN and a 0.2 s heartbeat."""
    with running_upstreams(tmp_path_factory.mktemp("compat")) as upstreams:
        settings = gateway_settings(
            upstreams.settings, cors_origins=(ORIGIN,), compat_heartbeat_interval=0.2
        )
        with serve_app(create_app(settings)) as server:
            yield Gateway(server.url)


@pytest.fixture(scope="module")
def plan_run(gateway: Gateway) -> NodeRun:
    """One deep-think run of PLAN_QUERY (code, search and an MCP tool), read by the UI's client."""
    body = {"query": PLAN_QUERY, "sessionId": "s1", "requestId": "req-plan-1", "deepThink": 1}
    return fetch_event_source(gateway, body)


def later_events(run: NodeRun) -> list[dict[str, Any]]:
    """The eventData of a deep-think run's packets after the planner's thought and plan."""
    events = [p["resultMap"]["eventData"] for p in run.results]
    return [e for e in events if e["messageType"] == "task"]


def test_plan_mode_packets_match_joyagent_field_by_field(
    gateway: Gateway, plan_run: NodeRun
) -> None:
    run = plan_run

    headers = run.opened["headers"]
    assert run.opened["status"] == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["access-control-allow-credentials"] == "true"
    assert run.closed
    assert all(m["id"] == "" and m["event"] == "" for m in run.messages), "no id:/event: lines"
    packets = run.results
    assert all(set(p) == PACKET_FIELDS for p in run.packets)
    for packet in packets:
        assert packet["reqId"] == "req-plan-1" and packet["traceId"] == headers["x-task-id"]
        assert packet["responseType"] == "text" and packet["encrypted"] is False
        assert packet["resultMap"]["agentType"] == "3"
        assert packet["resultMap"]["multiAgent"] == {}
    *running, last = packets
    assert all(p["status"] == "running" and not p["finished"] for p in running)
    assert all(p["response"] == p["responseAll"] == "" for p in running)

    events = [p["resultMap"]["eventData"] for p in packets]
    thoughts = [e for e in events if e["messageType"] == "plan_thought"]
    assert thoughts and events[: len(thoughts)] == thoughts
    assert [e["messageOrder"] for e in thoughts] == list(range(1, len(thoughts) + 1))
    assert all(
        "taskId" not in e and e["resultMap"]["messageType"] == "plan_thought" for e in thoughts
    )
    plans = list(itertools.takewhile(lambda e: "taskId" not in e, events[len(thoughts) :]))
    for plan in plans:
        assert plan["messageType"] == "plan" and plan["messageOrder"] == 1
        assert set(plan["resultMap"]) == {"title", "stages", "steps", "stepStatus", "notes"}
        assert len(plan["resultMap"]["steps"]) == 3

    later = events[len(thoughts) + len(plans) :]
    assert all(e["messageType"] == "task" for e in later)
    starts = [i for i, e in enumerate(later) if e["resultMap"]["messageType"] == "task"]
    assert len(starts) == 3
    task_ids = [later[i]["taskId"] for i in starts]
    assert len(set(task_ids)) == 3
    for begin, end in zip(starts, [*starts[1:], len(later)], strict=True):
        group = later[begin:end]
        assert group[0]["taskOrder"] == 1
        if end != len(later):
            assert {e["taskId"] for e in group} == {later[begin]["taskId"]}
    kinds = {e["resultMap"]["messageType"] for e in later}
    assert {"plan", "tool_thought", "tool_result", "code", "deep_search", "task_summary"} <= kinds
    for event in later:
        assert None not in event["resultMap"].values()
        assert isinstance(event["resultMap"]["messageTime"], str)

    assert last["finished"] is True and last["status"] == "success"
    final = last["resultMap"]["eventData"]["resultMap"]
    assert final["messageType"] == "result" and final["finish"] is True
    assert final["resultMap"]["taskSummary"] == final["result"] == last["response"]
    assert last["responseAll"] == last["response"] and last["response"].startswith("## Summary")
    assert all(merge_like_the_ui(packets).values())

    with gateway.client() as client:
        snapshot = client.get(f"/api/tasks/{headers['x-task-id']}").json()
    assert snapshot["status"] == "COMPLETED" and snapshot["result"] == last["response"]


def test_every_plan_mode_response_carries_a_result_map_with_the_agent_type(
    plan_run: NodeRun,
) -> None:
    responses = [e["resultMap"] for e in later_events(plan_run)]
    thoughts = [p["resultMap"]["eventData"]["resultMap"] for p in plan_run.results[:3]]

    assert thoughts[0]["messageType"] == "plan_thought"
    for response in [*thoughts, *responses]:
        assert isinstance(response["resultMap"], dict), response["messageType"]
        assert response["resultMap"]["agentType"] == 3, response["messageType"]


def test_the_plan_names_one_stage_per_step_so_the_ui_plan_box_has_no_empty_heading(
    plan_run: NodeRun,
) -> None:
    events = [p["resultMap"]["eventData"] for p in plan_run.results]
    plans = [e["resultMap"] for e in events if e["messageType"] == "plan"]
    plans += [e["resultMap"]["plan"] for e in later_events(plan_run) if "plan" in e["resultMap"]]

    title = plans[0]["title"]
    assert title.strip() and len(plans) >= 2
    for plan in plans:  # the UI groups the steps under their stage: here all under the title
        assert plan["stages"] == [title] * len(plan["steps"])


def test_a_step_answer_reaches_the_ui_once_as_its_thought_and_its_summary_keeps_the_files(
    plan_run: NodeRun,
) -> None:
    events = later_events(plan_run)
    shown = merge_like_the_ui(plan_run.results)  # the settled thoughts, as the UI holds them
    summaries = [e for e in events if e["resultMap"]["messageType"] == "task_summary"]

    assert len(summaries) == 3, "one per plan step"
    for summary in summaries:
        response = summary["resultMap"]
        answer = shown[(summary["taskId"], summary["messageId"])]  # its text, streamed
        assert answer.strip(), "the step's answer was streamed as its thought"
        assert set(response["resultMap"]) == {"taskSummary", "fileList", "agentType"}
        assert response["resultMap"]["taskSummary"] == response["taskSummary"] == ""
        assert isinstance(response["resultMap"]["fileList"], list)
    texts = [*shown.values(), *(e["resultMap"].get("taskSummary") for e in events)]
    for summary in summaries:
        answer = shown[(summary["taskId"], summary["messageId"])]
        assert texts.count(answer) == 1, f"shown once: {answer!r}"


def test_each_step_group_gets_one_plan_item_and_the_next_step_starts_in_the_plan_box(
    plan_run: NodeRun,
) -> None:
    events = [p["resultMap"]["eventData"] for p in plan_run.results]
    first = next(i for i, e in enumerate(events) if "taskId" in e)
    top = [e["resultMap"]["stepStatus"] for e in events[:first] if e["messageType"] == "plan"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for event in events[first:]:
        groups.setdefault(event["taskId"], []).append(event["resultMap"])

    assert top == [["not_started"] * 3, ["in_progress", "not_started", "not_started"]]
    assert events[first]["resultMap"]["messageType"] == "task", "no group before the first step"
    steps = [
        ["completed", "in_progress", "not_started"],
        ["completed", "completed", "in_progress"],
        ["completed", "completed", "completed"],
    ]
    assert len(groups) == 3
    for group, status in zip(groups.values(), steps, strict=True):
        plans = [r["plan"]["stepStatus"] for r in group if r["messageType"] == "plan"]
        assert plans == [status], "one plan item: this step done (and the next started)"


def test_plan_mode_message_orders_count_per_task_and_stream_type(plan_run: NodeRun) -> None:
    assert_orders_count_per_task_and_stream_type(later_events(plan_run))


def test_plan_mode_model_text_streams_as_tool_thought_and_the_answer_is_the_result(
    plan_run: NodeRun,
) -> None:
    events = later_events(plan_run)
    kinds = [e["resultMap"]["messageType"] for e in events]

    assert "agent_stream" not in kinds, "no item per piece of model text"
    assert kinds[-1] == "result" and kinds.count("result") == 1
    summary = events[-2]["resultMap"]  # the summary's text, settled as a thought
    assert summary["messageType"] == "tool_thought" and summary["isFinal"]
    assert summary["toolThought"] == events[-1]["resultMap"]["result"]


def test_react_mode_lives_under_one_task_id_and_sends_heartbeat_packets(gateway: Gateway) -> None:
    run = fetch_event_source(
        gateway, {"query": f"echo hello {SLOW}", "requestId": "req-react-1", "deepThink": 0}
    )

    heartbeats = [p for p in run.packets if p["packageType"] == "heartbeat"]
    assert heartbeats, "the run lasts several heartbeat intervals"
    for beat in heartbeats:
        assert beat == {
            "status": "success",
            "response": "",
            "responseAll": "",
            "finished": False,
            "useTimes": 0,
            "useTokens": 0,
            "resultMap": None,
            "responseType": "text",
            "traceId": "",
            "reqId": "req-react-1",
            "encrypted": False,
            "query": "",
            "messages": [],
            "packageType": "heartbeat",
            "errorMsg": "",
        }
    packets = run.results
    events = [p["resultMap"]["eventData"] for p in packets]
    assert {e["messageType"] for e in events} == {"task"}
    assert len({e["taskId"] for e in events}) == 1
    assert [e["taskOrder"] for e in events] == list(range(1, len(events) + 1))
    assert all(p["resultMap"]["agentType"] == "5" for p in packets)
    kinds = [e["resultMap"]["messageType"] for e in events]
    assert "agent_stream" not in kinds, "the answer streams as the model's tool_thought"
    assert kinds[-1] == "result" and kinds.count("result") == 1
    thoughts = [e["resultMap"] for e in events if e["resultMap"]["messageType"] == "tool_thought"]
    answer_id = thoughts[-1]["messageId"]
    assert thoughts[-1]["isFinal"] and thoughts[-1]["toolThought"] == "Done: Echo: echo hello"
    assert merge_like_the_ui(packets)[(events[0]["taskId"], answer_id)] == "Done: Echo: echo hello"
    assert_orders_count_per_task_and_stream_type(events)
    last = packets[-1]
    assert last["finished"] and last["resultMap"]["eventData"]["resultMap"]["finish"]
    with gateway.client() as client:
        task = client.get(f"/api/tasks/{run.opened['headers']['x-task-id']}").json()
    final = last["resultMap"]["eventData"]["resultMap"]
    assert final["resultMap"]["taskSummary"] == final["result"] == task["result"]
    assert run.messages[-1]["data"] == orjson.dumps(last).decode()


def test_a_failed_run_ends_the_ui_stream_with_a_failed_finished_packet(gateway: Gateway) -> None:
    run = fetch_event_source(gateway, {"query": f"echo hi {CUT}", "deepThink": 0})

    last = run.results[-1]
    assert last["finished"] is True and last["status"] == "failed"
    assert "upstream_error" in last["errorMsg"]
    final = last["resultMap"]["eventData"]["resultMap"]
    assert final["messageType"] == "result" and final["finish"] is True
    assert final["ext"] == {"status": "FAILED", "errorCode": "upstream_error"}
    assert final["resultMap"]["taskSummary"] == final["result"] == last["errorMsg"]


def test_auto_agent_frames_are_data_lines_without_a_space_with_bare_heartbeats(
    gateway: Gateway,
) -> None:
    body = {"requestId": "auto-1", "erp": "u", "query": f"echo hi {SLOW}", "agentType": 5}
    with gateway.client() as client, client.stream("POST", "/AutoAgent", json=body) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        raw = answer.read().decode()

    assert raw.endswith("\n\n")
    lines = [line for line in raw.split("\n") if line]
    assert all(line.startswith("data:") and not line.startswith("data: ") for line in lines)
    payloads = [line[5:] for line in lines]
    assert "heartbeat" in payloads
    frames = [orjson.loads(p) for p in payloads if p != "heartbeat"]
    assert frames[-1]["messageType"] == "result" and frames[-1]["finish"] is True
    assert frames[-1]["resultMap"]["taskSummary"] == frames[-1]["result"] == "Done: Echo: echo hi"
    assert not any(f["finish"] for f in frames[:-1])
    allowed = {
        "requestId", "messageId", "isFinal", "messageType", "messageTime", "planThought", "plan",
        "task", "taskSummary", "toolThought", "toolResult", "resultMap", "result", "finish", "ext",
    }  # fmt: skip
    for frame in frames:
        assert set(frame) <= allowed and frame["requestId"] == "auto-1"
        assert isinstance(frame["messageTime"], str) and frame["messageTime"].isdigit()
    kinds = [f["messageType"] for f in frames]
    assert "agent_stream" not in kinds, "model text is tool_thought, the answer the result"
    assert kinds.index("tool_thought") < kinds.index("tool_result") < len(kinds) - 2
    assert kinds[-2] == "tool_thought" and frames[-2]["toolThought"] == frames[-1]["result"]
    assert all(f["resultMap"]["agentType"] == 5 for f in frames)


def test_a_retried_request_joins_its_first_run_and_a_disconnect_does_not_stop_it(
    gateway: Gateway,
) -> None:
    body = {"requestId": "auto-retry-1", "query": "echo again", "agentType": 5}
    with gateway.client() as client:
        with client.stream("POST", "/AutoAgent", json=body) as first:
            task_id = first.headers["x-task-id"]
            next(first.iter_lines())  # one frame, then the client goes away
        with client.stream("POST", "/AutoAgent", json=body) as again:
            assert again.headers["x-task-id"] == task_id
        with client.stream("GET", f"/api/tasks/{task_id}/events") as events:
            finish = [line for line in events.iter_lines() if '"finish":true' in line]
        snapshot = client.get(f"/api/tasks/{task_id}").json()

    assert finish and snapshot["status"] == "COMPLETED"
    assert snapshot["result"] == "Done: Echo: echo again"


def test_cors_preflight_and_all_models_answer_the_ui_origin(gateway: Gateway) -> None:
    with gateway.client() as client:
        for path in (GPT, "/AutoAgent"):
            preflight = client.options(
                path,
                headers={
                    "Origin": ORIGIN,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type, cache-control",
                },
            )
            assert preflight.status_code == 200, preflight.text
            assert preflight.headers["access-control-allow-origin"] == ORIGIN
            assert preflight.headers["access-control-allow-credentials"] == "true"
            allowed = preflight.headers["access-control-allow-headers"].lower()
            assert "content-type" in allowed and "cache-control" in allowed
        models = client.get("/data/allModels", headers={"Origin": ORIGIN})

    assert models.status_code == 200 and models.json() == {"code": 200, "data": []}
    assert models.headers["access-control-allow-origin"] == ORIGIN


def test_a_bad_compat_request_is_a_json_error(gateway: Gateway) -> None:
    with gateway.client() as client:
        missing = client.post(GPT, json={"deepThink": 1})
        bad_mode = client.post(GPT, json={"query": "q", "deepThink": 7})
        unknown = client.post("/AutoAgent", json={"query": "q", "agentType": 42})

    for answer in (missing, bad_mode, unknown):
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "invalid_request"


def test_a_react_answer_that_calls_no_tool_reaches_the_ui_as_thought_and_result_only(
    gateway: Gateway,
) -> None:
    run = fetch_event_source(gateway, {"query": "hello there, how are you", "deepThink": 0})

    events = [p["resultMap"]["eventData"] for p in run.results]
    kinds = [e["resultMap"]["messageType"] for e in events]
    assert set(kinds) == {"tool_thought", "result"}, "nothing the UI shows as calling a tool"
    thoughts = [e for e in events if e["resultMap"]["messageType"] == "tool_thought"]
    assert len({e["messageId"] for e in thoughts}) == 1, "one growing thought item"
    assert [e["messageOrder"] for e in thoughts] == list(range(1, len(thoughts) + 1))
    assert all(e["resultMap"]["resultMap"] == {"agentType": 5} for e in thoughts)
    answer = merge_like_the_ui(run.results)[(events[0]["taskId"], thoughts[0]["messageId"])]
    final = events[-1]["resultMap"]
    assert final["resultMap"]["taskSummary"] == final["result"] == answer
    assert answer.startswith("You asked: hello there, how are you")


def test_a_tool_that_shows_its_own_work_gets_no_extra_tool_result_item(gateway: Gateway) -> None:
    body = {"requestId": "auto-code-1", "query": "calculate 6 * 7", "agentType": 5}
    with gateway.client() as client, client.stream("POST", "/AutoAgent", json=body) as answer:
        raw = answer.read().decode()

    frames = [
        orjson.loads(line[5:]) for line in raw.split("\n") if line[5:] not in ("", "heartbeat")
    ]
    kinds = [f["messageType"] for f in frames]
    assert "code" in kinds and "tool_result" not in kinds, kinds
    code = [f for f in frames if f["messageType"] == "code"]
    assert code[-1]["isFinal"] and code[-1]["resultMap"]["agentType"] == 5
    assert "codeOutput" in code[-1]["resultMap"]
