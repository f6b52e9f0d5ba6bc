"""The JoyAgent-compatible endpoints against a real gateway, real upstreams and real clients.

The UI endpoint is read with ``@microsoft/fetch-event-source`` under node (what JoyAgent's UI
uses); ``/AutoAgent`` with raw httpx lines, to check the framing byte for byte.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.app import create_app
from gateway.routes.compat import EventProjector
from tests.gateway.agents.support import gateway_settings, running_upstreams
from tests.helpers import ensure_node_modules, serve_app

ORIGIN = "http://joyagent-ui.example:3000"
GPT = "/web/api/v1/gpt/queryAgentStreamIncr"
PACKET_FIELDS = {
    "status", "response", "responseAll", "finished", "useTimes", "useTokens", "resultMap",
    "responseType", "traceId", "reqId", "encrypted", "query", "messages", "packageType",
    "errorMsg",
}  # fmt: skip
PLAN_QUERY = "calculate the sum of 3 and 4, then search for photosynthesis, then echo hi"
SLOW = "[[stub:tps=40]]"  # paces the stub so the heartbeat clock (0.2 s) ticks during a run
CUT = "[[stub:fault=cut]]"


@dataclass
class Gateway:
    url: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway app with the built-in agents, CORS for ORIGIN and a 0.2 s heartbeat."""
    with running_upstreams(tmp_path_factory.mktemp("compat")) as upstreams:
        settings = gateway_settings(
            upstreams.settings, cors_origins=(ORIGIN,), compat_heartbeat_interval=0.2
        )
        with serve_app(create_app(settings)) as server:
            yield Gateway(server.url)


@dataclass
class NodeRun:
    opened: dict[str, Any]
    messages: list[dict[str, Any]]
    closed: bool

    @property
    def packets(self) -> list[dict[str, Any]]:
        return [orjson.loads(m["data"]) for m in self.messages]

    @property
    def results(self) -> list[dict[str, Any]]:
        return [p for p in self.packets if p["packageType"] == "result"]


def fetch_event_source(gateway: Gateway, body: dict[str, Any]) -> NodeRun:
    """POST ``body`` to the UI endpoint with fetch-event-source under node; what it saw."""
    folder = ensure_node_modules()
    script = str(Path(folder) / "compat_client.mjs")
    done = subprocess.run(
        ["node", script, gateway.url + GPT, orjson.dumps(body).decode(), ORIGIN],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    lines = [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0, (done.stderr, lines)
    assert lines[0]["kind"] == "open", lines
    messages = [line for line in lines if line["kind"] == "message"]
    return NodeRun(lines[0], messages, lines[-1]["kind"] == "close")


def merge_like_the_ui(packets: list[dict[str, Any]]) -> dict[tuple[Any, str], Any]:
    """Merge eventData by (taskId, messageId): append non-final deltas, replace on final."""
    merged: dict[tuple[Any, str], Any] = {}
    for packet in packets:
        event = packet["resultMap"]["eventData"]
        response = event["resultMap"]
        key = (event.get("taskId"), event["messageId"])
        field = {"tool_thought": "toolThought", "agent_stream": "result"}.get(
            response.get("messageType", "")
        )
        if field is None or not isinstance(response.get(field), str):
            continue
        if response["isFinal"]:
            merged[key] = response[field]
        else:
            merged[key] = merged.get(key, "") + response[field]
    return merged


def test_plan_mode_packets_match_joyagent_field_by_field(gateway: Gateway) -> None:
    run = fetch_event_source(
        gateway, {"query": PLAN_QUERY, "sessionId": "s1", "requestId": "req-plan-1", "deepThink": 1}
    )

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
    plan = events[len(thoughts)]
    assert plan["messageType"] == "plan" and plan["messageOrder"] == 1
    assert set(plan["resultMap"]) == {"title", "stages", "steps", "stepStatus", "notes"}
    assert len(plan["resultMap"]["steps"]) == 3

    later = events[len(thoughts) + 1 :]
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
    thought_orders = [
        e["messageOrder"] for e in later if e["resultMap"]["messageType"] == "tool_thought"
    ]
    assert thought_orders[:2] == [1, 2]
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
    answer = [e["resultMap"] for e in events if e["resultMap"]["messageType"] == "agent_stream"]
    assert answer[-1]["isFinal"] and answer[-1]["result"] == "Done: Echo: echo hello"
    assert merge_like_the_ui(packets)[(events[0]["taskId"], answer[-1]["messageId"])] == (
        "Done: Echo: echo hello"
    )
    last = packets[-1]
    assert last["finished"] and last["resultMap"]["eventData"]["resultMap"]["finish"]
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
    assert kinds.index("tool_thought") < kinds.index("tool_result") < kinds.index("agent_stream")


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
