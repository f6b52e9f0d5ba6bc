"""Pushed frames written straight to uvicorn's transport (``gateway.routes._direct``), against
real uvicorn servers: found under the httptools protocol the gateway runs, framed as the
chunks ``send`` would write, and refused wherever ``send`` has to do the work."""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx
import pytest

from gateway.routes._direct import direct_cycle, write_chunk
from tests.helpers import serve_app


class _App:
    """Writes ``one`` directly where it can, then ``two`` through ``send``; notes what it saw."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}
        self.done = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        cycle = direct_cycle(send)
        self.seen["found"] = cycle is not None
        if cycle is not None:
            self.seen["before start"] = write_chunk(cycle, b"never")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if cycle is not None and write_chunk(cycle, b"one\n"):
            self.seen["direct"] = True
        else:
            await send({"type": "http.response.body", "body": b"one\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"two\n", "more_body": True})
        if scope["path"] == "/wait":  # until the client hangs up
            while (await receive())["type"] != "http.disconnect":
                pass
            if cycle is not None:
                self.seen["after disconnect"] = write_chunk(cycle, b"gone")
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.done.set()


def test_under_httptools_frames_are_written_as_the_chunks_send_would_write() -> None:
    app = _App()
    with serve_app(app, http="httptools") as server:
        response = httpx.get(server.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == b"one\ntwo\n"
    assert app.seen == {"found": True, "before start": False, "direct": True}


def test_under_h11_send_does_the_writing() -> None:
    app = _App()
    with serve_app(app, http="h11") as server:
        response = httpx.get(server.url + "/", timeout=10)
    assert response.content == b"one\ntwo\n"
    assert app.seen == {"found": False}


def test_nothing_is_written_once_the_client_is_gone() -> None:
    app = _App()
    with serve_app(app, http="httptools") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /wait HTTP/1.1\r\nhost: x\r\n\r\n")
            got = b""
            while b"two\n" not in got:
                chunk = sock.recv(4096)
                assert chunk, "the server closed before the second chunk"
                got += chunk
        assert app.done.wait(10)
    assert b"\r\n4\r\none\n\r\n4\r\ntwo\n\r\n" in got
    assert app.seen["after disconnect"] is False


@pytest.mark.parametrize("send", [print, None, object()])
def test_anything_but_uvicorn_s_send_is_not_taken_for_it(send: Any) -> None:
    assert direct_cycle(send) is None
