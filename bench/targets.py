"""The three things a scenario measures side by side: the upstream directly (the floor), the
gateway, and the naive relay — how to ask each for a stream and how to read its frames."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from bench.client import Request, post_json
from bench.procs import Child


@dataclass
class Target:
    """One server under test; ``child`` is the process whose CPU the scenario charges."""

    name: str
    child: Child
    marker: bytes  # what precedes a token's text in a frame's JSON
    crlf: bool = False  # sse-starlette separates lines with CRLF
    agent_type: int = 1  # the gateway's agent: 1 relay, 5 ReAct

    @property
    def port(self) -> int:
        return self.child.port

    def stream(self, query: str, key: str | None = None) -> Request:
        """Start a relayed completion of ``query`` and stream it."""
        if self.name == "direct":
            body = {
                "model": "bench",
                "stream": True,
                "messages": [{"role": "user", "content": query}],
            }
            return post_json("/v1/chat/completions", body, accept="text/event-stream")
        if self.name == "naive":
            return post_json("/relay", {"query": query, "key": key or uuid.uuid4().hex})
        body = {"query": query, "agentType": self.agent_type}
        return post_json("/api/tasks", body, accept="text/event-stream")

    def attach(self, key: str, after: int) -> Request:
        """Read (replay, then tail) stream ``key`` after SSE id ``after``."""
        headers = {"accept": "text/event-stream", "last-event-id": str(after)}
        if self.name == "naive":
            return Request("GET", f"/events/{key}", headers=headers)
        return Request("GET", f"/api/tasks/{key}/events", headers=headers)

    def idle(self) -> Request:
        """An idle stream (gateway: attach to a silent task, set by the scenario)."""
        return Request("GET", "/idle", headers={"accept": "text/event-stream"})


def react_target(gateway: Target) -> Target:
    """The gateway's ReAct agent (agentType 5): the tools are offered, the bench's model answers
    without calling one, and its text streams as ``tool_thought`` deltas (DESIGN §3)."""
    return Target("react", gateway.child, b'"toolThought":"', agent_type=5)


def make_targets(upstream: Child, gateway: Child, naive: Child) -> dict[str, Target]:
    return {
        "direct": Target("direct", upstream, b'"content":"'),
        "gateway": Target("gateway", gateway, b'"result":"'),
        "naive": Target("naive", naive, b'"result": "', crlf=True),
    }
