"""``agent-gateway dev`` started as a user starts it: the whole system, then Ctrl-C.

Every service runs on a free port; the test drives a task end to end, loads the page, and checks
that SIGINT leaves no process behind, and that a child which dies is restarted once only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from gateway.devserver import DEV_ORDER
from gateway.upstream.sse import SSEDecoder
from tests.helpers import free_port, wait_http_ok

HEALTH = {
    "gateway": "/healthz",
    "tool_service": "/health",
    "mcp_client": "/health",
    "llm_stub": "/health",
    "frontend_stub": "/health",
}
FLAGS = {
    "gateway": "--gateway-port",
    "tool_service": "--tool-service-port",
    "mcp_client": "--mcp-client-port",
    "llm_stub": "--llm-stub-port",
    "frontend_stub": "--frontend-port",
}


@dataclass
class Dev:
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: Path

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux ``/proc``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def agent_gateway() -> list[str]:
    script = shutil.which("agent-gateway")
    return [script] if script else [sys.executable, "-m", "gateway.cli"]


@contextmanager
def dev_running() -> Iterator[Dev]:
    ports = {name: free_port() for name in DEV_ORDER}
    command = [*agent_gateway(), "dev", "--log-level", "warning"]
    for name, port in ports.items():
        command += [FLAGS[name], str(port)]
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LLM_BASE_URL")}
    env["ECHO_TOKEN_DELAY_MS"] = "5"
    with tempfile.TemporaryDirectory(prefix="agw-dev-") as folder:
        log = Path(folder) / "dev.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        dev = Dev(proc, ports, log)
        try:
            for name in DEV_ORDER:
                wait_http_ok(dev.url(name) + HEALTH[name], timeout=60, proc=proc)
            wait_until(lambda: "all services are up" in dev.output(), 10, "the banner")
            yield dev
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def stream_to_result(gateway: str, query: str, agent_type: int = 0) -> list[dict[str, object]]:
    """POST-SSE a task and read its messages until the finish (``[]`` if the type is unknown)."""
    messages: list[dict[str, object]] = []
    body = {"query": query, "agentType": agent_type}
    headers = {"Accept": "text/event-stream"}
    with httpx.stream(
        "POST", gateway + "/api/tasks", json=body, headers=headers, timeout=20
    ) as response:
        if response.status_code == 422 and agent_type != 0:
            return []  # that agent is not registered in this build
        assert response.status_code == 200
        decoder = SSEDecoder()
        for chunk in response.iter_bytes():
            messages += [orjson.loads(e.data) for e in decoder.feed(chunk)]
            if messages and messages[-1].get("finish"):
                break
    return messages


def test_dev_serves_a_complete_run_and_sigint_stops_every_child() -> None:
    with dev_running() as dev:
        out = dev.output()
        for name in DEV_ORDER:
            assert dev.url(name) in out
        children = children_of(dev.proc.pid)
        assert len(children) == len(DEV_ORDER)

        messages = stream_to_result(dev.url("gateway"), "the whole system works")
        assert messages[-1]["messageType"] == "result"
        assert messages[-1]["result"] == "the whole system works"

        # Plan-and-execute through llm_stub and tool_service, when that agent is registered.
        planned = stream_to_result(dev.url("gateway"), "Write a short report on bees", 3)
        if planned:
            kinds = {m["messageType"] for m in planned}
            assert {"plan", "task"} <= kinds
            assert planned[-1]["messageType"] == "result", planned[-1]

        # The internal services answer only the gateway: dev gave them a random token.
        tokenless = httpx.post(
            dev.url("tool_service") + "/v1/tool/code_interpreter",
            json={"requestId": "dev", "code": "print(1)", "stream": False},
            timeout=5,
        )
        assert tokenless.status_code == 401

        page = httpx.get(dev.url("frontend_stub") + "/", timeout=5)
        assert page.status_code == 200
        assert 'id="answer"' in page.text
        config = httpx.get(dev.url("frontend_stub") + "/config.js", timeout=5).text
        assert dev.url("gateway") in config
        preflight = httpx.options(
            dev.url("gateway") + "/api/tasks",
            headers={
                "Origin": dev.url("frontend_stub"),
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,idempotency-key",
            },
            timeout=5,
        )
        assert preflight.headers["access-control-allow-origin"] == dev.url("frontend_stub")

        dev.proc.send_signal(signal.SIGINT)
        assert dev.proc.wait(30) == 0
        assert "all services stopped" in dev.output()
    assert [pid for pid in children if alive(pid)] == []


def test_a_child_that_dies_is_restarted_once_then_dev_exits_non_zero() -> None:
    with dev_running() as dev:
        health = dev.url("llm_stub") + "/health"
        first = child_serving(dev, "llm_stub")
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: "llm_stub is back" in dev.output(), 30, "the restart")
        wait_http_ok(health, timeout=10, proc=dev.proc)
        assert "restarting it (once)" in dev.output()

        second = child_serving(dev, "llm_stub")
        assert second != first
        others = [p for p in children_of(dev.proc.pid) if p != second]
        os.kill(second, signal.SIGKILL)
        assert dev.proc.wait(30) == 1
        assert "llm_stub exited with code -9 again" in dev.output()
        assert [pid for pid in others if alive(pid)] == []


def child_serving(dev: Dev, service: str) -> int:
    """The pid of the child of ``dev`` started for ``service`` (found by its ``PORT``)."""
    wanted = f"PORT={dev.ports[service]}".encode()
    for pid in children_of(dev.proc.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in environ:
            return pid
    raise LookupError(f"no child serves {service}")
