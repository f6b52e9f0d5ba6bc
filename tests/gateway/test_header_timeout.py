"""The header timeout (``gateway.header_timeout``): connections whose request headers do not
arrive in time are closed; slow bodies and long SSE streams are not cut. Raw sockets to
127.0.0.1, a short timeout, every wait bounded by a socket timeout."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.app import create_app
from gateway.header_timeout import header_timeout_protocol
from gateway.settings import Settings
from tests.gateway.support import INTAKE_WAIT, echo_query
from tests.helpers import ThreadedServer, serve_app, spawn_service

TIMEOUT = 0.5
BOUND = 10.0  # how long a test waits at most for the server to close a connection


@contextlib.contextmanager
def timed_server(**overrides: Any) -> Iterator[ThreadedServer]:
    """The gateway on uvicorn with ``http=header_timeout_protocol(TIMEOUT)``."""
    fields = {"echo_token_delay_ms": 0.0, "intake_wait": INTAKE_WAIT, **overrides}
    app = create_app(dataclasses.replace(Settings.from_env({}), **fields))
    with serve_app(app, http=header_timeout_protocol(TIMEOUT)) as server:  # type: ignore[arg-type]
        yield server


def connect(server_port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server_port), timeout=BOUND)
    sock.settimeout(BOUND)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (``socket.timeout`` after ``BOUND``)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_connections_that_send_half_their_headers_are_closed_with_a_408() -> None:
    with timed_server() as server:
        socks = [connect(server.port) for _ in range(30)]
        idle = connect(server.port)  # sends nothing at all
        for sock in socks:
            sock.sendall(b"GET /api/tasks HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answers = [read_until_closed(sock) for sock in socks]
        idle_answer = read_until_closed(idle)
        for sock in [*socks, idle]:
            sock.close()
    for answer in [*answers, idle_answer]:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert orjson.loads(body)["error"]["code"] == "header_timeout"


def test_a_stalled_second_request_on_a_keep_alive_connection_is_closed() -> None:
    with timed_server() as server:
        sock = connect(server.port)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first or not first.rstrip().endswith(b"}"):
            first += sock.recv(65536)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        rest = read_until_closed(sock)
        sock.close()
    assert first.startswith(b"HTTP/1.1 200 ")
    assert rest == b""  # closed; a response to the first request could have been streaming


def test_a_slow_but_complete_request_and_a_slow_body_are_served() -> None:
    body = orjson.dumps({"query": "slow but fine", "agentType": 0})
    head = (
        b"POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    with timed_server() as server:
        sock = connect(server.port)
        for piece in (head[:10], head[10:40], head[40:]):  # headers within the limit
            sock.sendall(piece)
            time.sleep(TIMEOUT / 5)  # a slow client: pacing what it sends, not waiting
        for piece in (body[:5], body[5:15], body[15:]):  # the body over 3 times the limit
            time.sleep(TIMEOUT)
            sock.sendall(piece)
        answer = read_until_closed(sock)
        sock.close()
    assert answer.startswith(b"HTTP/1.1 202 "), answer[:200]


def test_an_sse_stream_lives_past_the_header_timeout() -> None:
    overrides = {"echo_token_delay_ms": 60.0, "heartbeat_interval": 0.1}
    with timed_server(**overrides) as server:
        with httpx.Client(base_url=server.url, timeout=BOUND) as client:
            body = {"query": echo_query(60), "agentType": 0}
            task_id = client.post("/api/tasks", json=body).json()["taskId"]
            seqs: list[int] = []
            started = time.monotonic()
            with client.stream("GET", f"/api/tasks/{task_id}/events") as response:
                for line in response.iter_lines():
                    if line.startswith("id: "):
                        seqs.append(int(line[4:]))
                    if line.startswith("data: ") and orjson.loads(line[6:])["finish"]:
                        break
            lasted = time.monotonic() - started
    assert lasted > 4 * TIMEOUT  # 60 tokens at 60 ms: the stream outlived the limit
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 60


@pytest.mark.slow
def test_the_served_gateway_applies_header_timeout_from_the_environment() -> None:
    with spawn_service("gateway", env={"HEADER_TIMEOUT": str(TIMEOUT)}) as url:
        sock = connect(httpx.URL(url).port or 0)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = read_until_closed(sock)
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
