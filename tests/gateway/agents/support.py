"""Helpers of the agent tests: the real upstream servers, a task runner, and stream checks."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio

from gateway.agents import register_builtin_agents
from gateway.printer import Printer
from gateway.protocol import PAYLOAD_FIELDS, AgentRequest, TaskRecord, new_task_id, now_ms
from gateway.settings import Settings
from gateway.store import MemoryStore
from gateway.tasks import TaskContext, TaskManager, TaskRegistry
from gateway.upstream import UpstreamSettings
from llm_stub import create_app as create_stub
from llm_stub.settings import Knobs, StubSettings
from mcp_client import Settings as BridgeSettings
from mcp_client import create_app as create_bridge
from mcp_client.target import parse_allowlist
from tests.gateway.support import INTAKE_WAIT
from tests.helpers import free_port, serve_app
from tool_service import Settings as ToolSettings
from tool_service import create_app as create_tool_service

REPO = Path(__file__).resolve().parents[3]
TOOL_OUTPUT_TYPES = ("tool_result", "code", "markdown", "html", "deep_search")


@dataclass(frozen=True)
class Upstreams:
    """The real servers an agent talks to, as the gateway's upstream settings see them."""

    settings: UpstreamSettings
    stub_url: str  # the stub's base URL (without /v1)
    mcp_server_url: str


@contextlib.contextmanager
def sdk_mcp_server() -> Iterator[str]:
    """The SDK MCP server of the bridge tests over streamable HTTP; yields its URL."""
    port = free_port()
    args = [sys.executable, "-m", "tests.mcp_client.sdk_server", "--port", str(port)]
    proc = subprocess.Popen(
        [*args, "--transport", "http"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the SDK MCP server exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("the SDK MCP server did not listen in 20 s") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def running_upstreams(workdir: Path) -> Iterator[Upstreams]:
    """llm_stub (no pacing), tool_service, mcp_client and an SDK MCP server, all real; the
    tool service and the bridge require a service token, which the gateway's settings hold."""
    token = secrets.token_urlsafe(16)
    stub_settings = StubSettings(knobs=Knobs(tokens_per_second=0))
    with contextlib.ExitStack() as stack:
        mcp_url = stack.enter_context(sdk_mcp_server())
        stub = stack.enter_context(serve_app(create_stub(stub_settings)))
        tool_settings = ToolSettings.from_env(
            {
                "LLM_BASE_URL": stub.url + "/v1",
                "FILE_ROOT": str(workdir / "files"),
                "SANDBOX_ROOT": str(workdir / "sandboxes"),
                "CODE_TIMEOUT": "20",
                "CODE_MEMORY_MB": "512",
                "SERVICE_TOKEN": token,
            }
        )
        tools = stack.enter_context(serve_app(create_tool_service(tool_settings)))
        bridge_settings = BridgeSettings(
            connect_timeout=5,
            call_timeout=15,
            tools_ttl=5,
            service_token=token,
            allowed_servers=parse_allowlist("127.0.0.1"),  # the MCP server is on loopback
        )
        bridge = stack.enter_context(serve_app(create_bridge(bridge_settings)))
        settings = UpstreamSettings(
            llm_base_url=stub.url + "/v1",
            llm_max_retries=0,
            llm_idle_timeout=10,
            llm_total_timeout=30,
            tool_service_url=tools.url,
            mcp_client_url=bridge.url,
            mcp_server_urls=(mcp_url,),
            tool_timeout=30,
            service_token=token,
        )
        yield Upstreams(settings, stub.url, mcp_url)


def gateway_settings(upstream: UpstreamSettings, **overrides: Any) -> Settings:
    """Gateway settings for tests: few workers, short intervals, the given upstreams."""
    values: dict[str, Any] = {
        "max_running": 2,
        "lease_renew_interval": 0.2,
        "sweep_interval": 0.5,
        "task_timeout": 60.0,
        "intake_wait": INTAKE_WAIT,
        "upstream": upstream,
        **overrides,
    }
    return replace(Settings(), **values)


@contextlib.asynccontextmanager
async def running_manager(
    services: dict[str, Any], **overrides: Any
) -> AsyncIterator[tuple[TaskManager, MemoryStore]]:
    """A real TaskManager with the built-in agents, working on a fresh MemoryStore."""
    store = MemoryStore()
    await store.start()
    registry = TaskRegistry()
    register_builtin_agents(registry)
    manager = TaskManager(
        store,
        registry,
        gateway_settings(services["upstream"], **overrides).task_settings(),
        services,
    )
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(manager.run)
            try:
                yield manager, store
            finally:
                with anyio.fail_after(15, shield=True):
                    await manager.stop(grace=1.0)
                group.cancel_scope.cancel()
    finally:
        await store.close()


async def log_of(store: MemoryStore, task_id: str) -> list[dict[str, Any]]:
    """Every message of the task's log, decoded."""
    return [m.json() for m in await store.read(task_id, 0, 100_000)]


async def wait_for_type(store: MemoryStore, task_id: str, message_type: str) -> None:
    """Wait (the caller bounds it) until the task's log holds a message of ``message_type``."""
    seen = 0
    while True:
        batch = await store.tail(task_id, seen, 5.0)
        if any(m.json()["messageType"] == message_type for m in batch):
            return
        if batch:
            seen = batch[-1].seq


async def run_task(
    services: dict[str, Any], request: AgentRequest, timeout: float = 45.0
) -> tuple[TaskRecord, list[dict[str, Any]]]:
    """Run ``request`` through a real TaskManager to its end; the final record and the log."""
    async with running_manager(services) as (manager, store):
        record, _ = await manager.submit(request)
        with anyio.fail_after(timeout):
            record = await manager.wait_terminal(record.task_id, timeout)
        return record, await log_of(store, record.task_id)


@contextlib.asynccontextmanager
async def direct_context(
    services: dict[str, Any], query: str, agent_type: int
) -> AsyncIterator[tuple[TaskContext, MemoryStore]]:
    """A TaskContext on a MemoryStore for calling a handler directly (no runner)."""
    store = MemoryStore()
    await store.start()
    try:
        task_id = new_task_id()
        request = AgentRequest(query=query, agentType=agent_type)
        record = TaskRecord(task_id, task_id, agent_type, query, created_at=now_ms())
        await store.create(record)
        await store.claim(task_id, "test", 60_000)
        printer = Printer(store, task_id, task_id)
        ctx = TaskContext(task_id, request, printer, asyncio.Event(), services)
        yield ctx, store
    finally:
        await store.close()


def payload_of(message: dict[str, Any]) -> Any:
    """The payload field of a message."""
    return message[PAYLOAD_FIELDS[message["messageType"]]]


def check_streaming_rule(messages: Sequence[dict[str, Any]]) -> None:
    """Every messageId ends with exactly one isFinal frame, holding the full content.

    The deltas of a message share one type; only a model turn's ``tool_thought`` deltas may end
    with a final frame of another type (the turn was the answer: DESIGN §3).
    """
    frames: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        frames.setdefault(message["messageId"], []).append(message)
    for message_id, group in frames.items():
        finals = [m for m in group if m["isFinal"]]
        assert len(finals) == 1, (message_id, group)
        assert group[-1]["isFinal"], (message_id, group)
        delta_types = {m["messageType"] for m in group[:-1]}
        assert len(delta_types) <= 1, group
        if delta_types != {group[-1]["messageType"]}:
            assert delta_types <= {"tool_thought"}, group
        deltas = [payload_of(m) for m in group[:-1]]
        if deltas and all(isinstance(d, str) for d in deltas):
            assert payload_of(group[-1]) == "".join(deltas), (message_id, group)


def frames_of(messages: Sequence[dict[str, Any]], message_id: str) -> list[dict[str, Any]]:
    """The frames of one message, in order."""
    return [m for m in messages if m["messageId"] == message_id]


def first_index(types: Sequence[str], wanted: str | Sequence[str], start: int = 0) -> int:
    """The index of the first of ``wanted`` in ``types`` at or after ``start``."""
    names = (wanted,) if isinstance(wanted, str) else tuple(wanted)
    for index in range(start, len(types)):
        if types[index] in names:
            return index
    raise AssertionError(f"no {names} after position {start} in {types}")


__all__ = [
    "TOOL_OUTPUT_TYPES",
    "Upstreams",
    "check_streaming_rule",
    "direct_context",
    "first_index",
    "frames_of",
    "gateway_settings",
    "log_of",
    "payload_of",
    "run_task",
    "running_manager",
    "running_upstreams",
    "wait_for_type",
]
