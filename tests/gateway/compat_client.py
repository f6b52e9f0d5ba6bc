"""Reading the JoyAgent-compatible endpoints as JoyAgent's clients do, and checks of what they
send (helpers of ``test_compat``)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.helpers import ensure_node_modules

ORIGIN = "http://joyagent-ui.example:3000"
GPT = "/web/api/v1/gpt/queryAgentStreamIncr"
STREAM_TYPES = {"html", "markdown", "deep_search", "tool_thought", "data_analysis"}
"""genie-backend's stream types: their packets are counted per ``taskId:messageType``."""


@dataclass
class Gateway:
    url: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


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
        if response.get("messageType") != "tool_thought":
            continue
        field = "toolThought"
        if response["isFinal"]:
            merged[key] = response[field]
        else:
            merged[key] = merged.get(key, "") + response[field]
    return merged


def assert_orders_count_per_task_and_stream_type(events: list[dict[str, Any]]) -> None:
    """genie-backend's messageOrder: 1, 2, 3 … per taskId:messageType for its stream types,
    1 on every other packet of a task."""
    seen: dict[str, int] = {}
    for event in events:
        if "taskId" not in event:
            continue
        kind = event["resultMap"]["messageType"]
        if kind in STREAM_TYPES:
            key = f"{event['taskId']}:{kind}"
            seen[key] = seen.get(key, 0) + 1
            assert event["messageOrder"] == seen[key], (kind, event["messageOrder"], seen[key])
        else:
            assert event["messageOrder"] == 1, kind
    assert any(n > 1 for n in seen.values()), "a stream type was counted"
