"""Real MCP servers for the bridge tests, and the bridge itself under real uvicorn.

Servers: the SDK server of :mod:`tests.mcp_client.sdk_server` and the reference
``@modelcontextprotocol/server-everything`` under node, each over streamable HTTP and legacy
SSE, as child processes on free ports (so a test can kill one and restart it on its port).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from mcp_client import Settings, create_app
from mcp_client.target import parse_allowlist
from tests.helpers import ensure_node_modules, free_port, serve_app

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVERYTHING = "node_modules/@modelcontextprotocol/server-everything/dist/index.js"
SERVER_KINDS = ("sdk-http", "sdk-sse", "everything-http", "everything-sse")
# The test servers listen on loopback, which the address guard refuses unless allowlisted.
LOOPBACK = parse_allowlist("127.0.0.1")


@dataclass
class McpServer:
    """One MCP server child process: ``kind`` is ``sdk-http``, ``everything-sse``, ..."""

    kind: str
    path: str | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def transport(self) -> str:
        return "sse" if self.kind.endswith("sse") else "streamable_http"

    @property
    def is_sdk(self) -> bool:
        return self.kind.startswith("sdk")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        default = "/sse" if self.transport == "sse" else "/mcp"
        return self.base + (self.path or default)

    def launch(self) -> None:
        """Start the process (not waiting for it); see :meth:`wait_ready`."""
        env = {**os.environ, "PORT": str(self.port)}
        if self.is_sdk:
            transport = "sse" if self.transport == "sse" else "http"
            args = [sys.executable, "-m", "tests.mcp_client.sdk_server"]
            args += ["--port", str(self.port), "--transport", transport]
            if self.path:
                args += ["--path", self.path]
            cwd = REPO
        else:
            cwd = ensure_node_modules()
            mode = "sse" if self.transport == "sse" else "streamableHttp"
            args = ["node", EVERYTHING, mode]
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait (bounded) until the server accepts TCP connections on its port."""
        if self.proc is None:
            raise RuntimeError("not launched")
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.kind} did not listen in {timeout}s") from None
                time.sleep(0.05)

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def kill(self) -> None:
        """Kill the process at once (no graceful shutdown) and reap it."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stats(self) -> dict[str, object]:
        """The SDK server's view of the wire (sessions, methods, headers)."""
        if not self.is_sdk:
            raise RuntimeError("only the SDK server reports stats")
        data: dict[str, object] = httpx.get(self.base + "/stats", timeout=5).json()
        return data


@contextlib.contextmanager
def running_servers(*servers: McpServer) -> Iterator[tuple[McpServer, ...]]:
    """Start ``servers`` in parallel; kill them all at the end."""
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.kill()


@pytest.fixture(scope="session")
def mcp_servers() -> Iterator[dict[str, McpServer]]:
    """The four shared servers, by kind (tests that kill a server start their own)."""
    with running_servers(*(McpServer(kind) for kind in SERVER_KINDS)) as servers:
        yield {server.kind: server for server in servers}


@pytest.fixture(params=SERVER_KINDS)
def mcp_server(request: pytest.FixtureRequest, mcp_servers: dict[str, McpServer]) -> McpServer:
    """Each shared server in turn."""
    return mcp_servers[request.param]


@dataclass
class Bridge:
    """The bridge under real uvicorn, with an async HTTP client aimed at it."""

    url: str
    client: httpx.AsyncClient

    async def post(self, path: str, body: object, **headers: str) -> httpx.Response:
        return await self.client.post(self.url + path, json=body, headers=headers)

    async def pool(self) -> dict[str, object]:
        data: dict[str, object] = (await self.client.get(self.url + "/v1/pool")).json()["data"]
        return data


@contextlib.asynccontextmanager
async def running_bridge(settings: Settings | None = None) -> AsyncIterator[Bridge]:
    """Serve ``create_app(settings)`` on a free port for the duration of the block."""
    settings = settings or Settings(
        connect_timeout=5, call_timeout=15, tools_ttl=5, allowed_servers=LOOPBACK
    )
    with serve_app(create_app(settings)) as server:
        async with httpx.AsyncClient(timeout=30) as client:
            yield Bridge(server.url, client)


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    """A bridge with test-friendly defaults that may reach servers on 127.0.0.1."""
    async with running_bridge() as bridge:
        yield bridge
