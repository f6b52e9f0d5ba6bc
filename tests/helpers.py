"""Shared test helpers: real servers on free loopback ports, and bounded waits.

Streams are tested against real uvicorn servers (``httpx.ASGITransport`` buffers whole
responses, so an endless SSE stream would hang it).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """A uvicorn server running an ASGI app in a background thread with its own event loop."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


@contextlib.contextmanager
def serve_app(app: Any, port: int | None = None) -> Iterator[ThreadedServer]:
    """Run ``app`` under uvicorn on a free port for the duration of the block."""
    server = ThreadedServer(app, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_http_ok(
    url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``url`` until it answers 2xx, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).is_success:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer in {timeout}s: {last!r}")


@contextlib.contextmanager
def spawn_service(
    service: str, env: Mapping[str, str] | None = None, health: str = "/healthz"
) -> Iterator[str]:
    """Start ``agent-gateway serve <service>`` as a child process; yield its base URL."""
    port = free_port()
    full_env = {**os.environ, **(env or {}), "HOST": "127.0.0.1", "PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", service, "--port", str(port)],
        env=full_env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(url + health, proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


NODE_DIR = os.path.join(os.path.dirname(__file__), "node")
_node_lock = threading.Lock()


def ensure_node_modules() -> str:
    """Install the JavaScript test peers (``tests/node/package.json``) once; return the folder.

    Runs ``npm install`` only when ``node_modules`` is missing, so repeated sessions are fast.
    """
    with _node_lock:
        marker = os.path.join(NODE_DIR, "node_modules", ".package-lock.json")
        if not os.path.exists(marker):
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_DIR,
                check=True,
                timeout=600,
            )
    return NODE_DIR


def wait_redis(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10) -> None:
    """Wait until the Redis on ``port`` answers PING; fail if ``proc`` exits or time runs out."""
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)
    finally:
        client.close()
