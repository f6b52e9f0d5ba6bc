"""A task's files through the gateway: the links users see lead to it, and it serves the owner.

The tool service behind it is the real one, requiring its service token (DESIGN §10).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.agents.tools import tool_request_id
from gateway.app import create_app
from gateway.security import SecuritySettings, install_security, parse_api_keys
from gateway.settings import Settings, SettingsError
from tests.gateway.agents.support import Upstreams, gateway_settings
from tests.helpers import ThreadedServer, client_of, free_port, serve_app

pytestmark = pytest.mark.anyio

ALICE = {"Authorization": "Bearer ka"}
BOB = {"Authorization": "Bearer kb"}
REPORT = "write a report about photosynthesis"


@contextlib.contextmanager
def gateway(upstreams: Upstreams, api_keys: str = "alice:ka,bob:kb") -> Iterator[ThreadedServer]:
    """The whole gateway (built-in agents, the real upstreams), its PUBLIC_URL its own address."""
    port = free_port()
    settings = gateway_settings(upstreams.settings, public_url=f"http://127.0.0.1:{port}")
    app = create_app(settings)
    install_security(app, SecuritySettings(api_keys=parse_api_keys(api_keys)))
    with serve_app(app, port) as server:
        yield server


async def run_to_end(
    client: httpx.AsyncClient, query: str, agent_type: int
) -> tuple[str, list[dict[str, Any]]]:
    """Submit as Alice, follow the SSE stream to its end; the task id and its messages."""
    body = {"query": query, "agentType": agent_type}
    headers = {**ALICE, "Accept": "text/event-stream"}
    with anyio.fail_after(60):
        async with client.stream("POST", "/api/tasks", json=body, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            task_id = response.headers["x-task-id"]
            await response.aread()  # the stream ends with the task's finish
    snapshot = await client.get(f"/api/tasks/{task_id}?after=0&limit=1000", headers=ALICE)
    assert snapshot.json()["status"] == "COMPLETED", snapshot.json()
    return task_id, snapshot.json()["messages"]


def final_of(messages: list[dict[str, Any]], message_type: str) -> dict[str, Any]:
    finals = [m for m in messages if m["messageType"] == message_type and m["isFinal"]]
    assert finals, [m["messageType"] for m in messages]
    return finals[-1]


async def upload(upstreams: Upstreams, task_id: str, name: str, data: bytes) -> None:
    """Put a file among a task's files on the tool service, as one of its tools would."""
    settings = upstreams.settings
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            settings.tool_service_url + "/v1/file_tool/upload_file_data",
            data={"requestId": tool_request_id(task_id), "fileName": name},
            files={"file": (name, data)},
            headers=settings.service_headers,
        )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("agent_type", [5, 3])
async def test_a_file_a_tool_wrote_is_linked_at_the_gateway_and_downloads_byte_for_byte(
    upstreams: Upstreams, agent_type: int
) -> None:
    with gateway(upstreams) as server:
        async with client_of(server, timeout=30) as client:
            task_id, messages = await run_to_end(client, REPORT, agent_type)
            report = final_of(messages, "markdown")["resultMap"]
            [info] = report["fileInfo"]
            [listed] = final_of(messages, "result")["resultMap"]["fileList"]
            download = await client.get(info["downloadUrl"], headers=ALICE)
            preview = await client.get(info["domainUrl"], headers=ALICE)
        tool = upstreams.settings
        async with httpx.AsyncClient(timeout=10) as direct:
            path = f"/v1/file_tool/download/{tool_request_id(task_id)}/report.md"
            stored = await direct.get(tool.tool_service_url + path, headers=tool.service_headers)
            tokenless = await direct.get(tool.tool_service_url + path)

    link = f"{server.url}/api/tasks/{task_id}/files/report.md"
    assert info["fileName"] == "report.md"
    assert info["downloadUrl"] == info["ossUrl"] == link
    assert info["domainUrl"] == f"{server.url}/api/tasks/{task_id}/preview/report.md"
    assert listed["downloadUrl"] == link
    assert tool.tool_service_url not in str(messages)  # no link leads to the internal service
    assert download.status_code == 200, download.text
    assert download.content == stored.content == report["data"].encode()
    assert download.headers["content-length"] == str(len(download.content))
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"] == 'attachment; filename="report.md"'
    assert preview.content == download.content
    assert preview.headers["content-type"] == "text/plain; charset=utf-8"
    assert preview.headers["content-disposition"] == 'inline; filename="report.md"'
    assert preview.headers["content-security-policy"].startswith("sandbox")
    assert preview.headers["x-content-type-options"] == "nosniff"
    assert tokenless.status_code == 401  # the gateway reached it with the token only


async def test_another_key_gets_404_on_a_task_file_and_the_owner_gets_its_bytes(
    upstreams: Upstreams,
) -> None:
    data = bytes(range(256)) * 64 + b"\r\n\x00end"
    with gateway(upstreams) as server:
        async with client_of(server, timeout=30) as client:
            created = await client.post(
                "/api/tasks", json={"query": "hi", "agentType": 0}, headers=ALICE
            )
            task_id = created.json()["taskId"]
            await upload(upstreams, task_id, "data.bin", data)
            url = f"/api/tasks/{task_id}/files/data.bin"
            alice = await client.get(url, headers=ALICE)
            bob = await client.get(url, headers=BOB)
            bob_preview = await client.get(f"/api/tasks/{task_id}/preview/data.bin", headers=BOB)
            bob_unknown = await client.get("/api/tasks/nope/files/data.bin", headers=BOB)
            nobody = await client.get(url)

    assert alice.status_code == 200 and alice.content == data
    for refused in (bob, bob_preview):
        assert refused.status_code == 404
        assert refused.json() == bob_unknown.json()  # the same answer as a missing task
    assert bob_unknown.json()["error"]["code"] == "not_found"
    assert nobody.status_code == 401


@pytest.mark.parametrize(
    "raw_name", ["%2E%2E", ".env", "a%2Fb", "..%2F..%2Fetc%2Fpasswd", "a%5Cb", "a%00b", ""]
)
async def test_a_file_name_that_is_not_one_plain_name_is_a_400(
    upstreams: Upstreams, raw_name: str
) -> None:
    with gateway(upstreams, api_keys="") as server:
        async with client_of(server, timeout=30) as client:
            created = await client.post("/api/tasks", json={"query": "hi", "agentType": 0})
            task_id = created.json()["taskId"]
            base = f"{server.url}/api/tasks/{task_id}"
            answers = [
                await client.get(httpx.URL(f"{base}/files/{raw_name}")),
                await client.get(httpx.URL(f"{base}/preview/{raw_name}")),
            ]

    for answer in answers:
        assert answer.status_code == 400, (raw_name, answer.text)
        assert answer.json()["error"]["code"] == "bad_request"


async def test_a_file_the_task_does_not_have_and_a_task_that_does_not_exist_are_404(
    upstreams: Upstreams,
) -> None:
    with gateway(upstreams, api_keys="") as server:
        async with client_of(server, timeout=30) as client:
            created = await client.post("/api/tasks", json={"query": "hi", "agentType": 0})
            task_id = created.json()["taskId"]
            missing_file = await client.get(f"/api/tasks/{task_id}/files/missing.txt")
            missing_task = await client.get("/api/tasks/no-such-task/files/missing.txt")

    for answer in (missing_file, missing_task):
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "not_found"
    assert "missing.txt" in missing_file.json()["error"]["message"]


async def test_a_preview_shows_html_only_sandboxed_and_unknown_types_as_attachments(
    upstreams: Upstreams,
) -> None:
    page = b"<html><script>fetch('/api/tasks')</script><p>report</p></html>"
    with gateway(upstreams, api_keys="") as server:
        async with client_of(server, timeout=30) as client:
            created = await client.post("/api/tasks", json={"query": "hi", "agentType": 0})
            task_id = created.json()["taskId"]
            await upload(upstreams, task_id, "report.html", page)
            await upload(upstreams, task_id, "tool.exe", b"MZ")
            await upload(upstreams, task_id, "résumé.txt", "été".encode())
            base = f"/api/tasks/{task_id}/preview/"
            html = await client.get(base + "report.html")
            exe = await client.get(base + "tool.exe")
            text = await client.get(base + quote("résumé.txt"))

    assert html.content == page
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    policy = html.headers["content-security-policy"]
    assert policy.startswith("sandbox;") and "default-src 'none'" in policy
    assert "script-src" not in policy and "allow-scripts" not in policy
    assert exe.content == b"MZ"
    assert exe.headers["content-disposition"].startswith("attachment")
    assert exe.headers["content-type"] == "application/octet-stream"
    assert text.content == "été".encode()
    assert text.headers["content-disposition"] == "inline; filename*=UTF-8''r%C3%A9sum%C3%A9.txt"


def test_public_url_defaults_to_the_listening_address_and_must_be_an_http_url() -> None:
    assert Settings.from_env({}).public_url == "http://127.0.0.1:8080"
    assert Settings.from_env({"HOST": "0.0.0.0", "PORT": "9000"}).public_url == (
        "http://127.0.0.1:9000"
    )
    assert Settings.from_env({"HOST": "::1"}).public_url == "http://[::1]:8080"
    given = Settings.from_env({"PUBLIC_URL": "https://agents.example.com/gw/"})
    assert given.public_url == "https://agents.example.com/gw"
    for bad in ("localhost:8080", "ftp://host", "http://host/?x=1"):
        with pytest.raises(SettingsError):
            Settings.from_env({"PUBLIC_URL": bad})


async def test_a_tool_service_that_cannot_be_reached_is_a_502_not_a_hang(
    upstreams: Upstreams,
) -> None:
    unreachable = dataclasses.replace(upstreams.settings, tool_service_url="http://127.0.0.1:9")
    with gateway(dataclasses.replace(upstreams, settings=unreachable), api_keys="") as server:
        async with client_of(server, timeout=30) as client:
            created = await client.post("/api/tasks", json={"query": "hi", "agentType": 0})
            task_id = created.json()["taskId"]
            with anyio.fail_after(20):
                answer = await client.get(f"/api/tasks/{task_id}/files/report.md")

    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "upstream_error"


def held_file_service(release: threading.Event, seen: list[str]) -> Starlette:
    """A tool service whose download sends its first bytes, then holds the rest until
    ``release`` (at most 10 s); it notes the ``Authorization`` each download came with."""

    async def download(request: Request) -> Response:
        seen.append(request.headers.get("authorization", ""))

        async def body() -> AsyncIterator[bytes]:
            yield b"first bytes;"
            await anyio.to_thread.run_sync(release.wait, 10)
            yield b" the rest"

        return StreamingResponse(body(), media_type="application/octet-stream")

    return Starlette(routes=[Route("/v1/file_tool/download/{rid}/{name}", download)])


async def test_a_file_streams_through_the_gateway_without_waiting_for_its_end(
    upstreams: Upstreams,
) -> None:
    release, seen = threading.Event(), []
    with serve_app(held_file_service(release, seen)) as held:
        settings = dataclasses.replace(upstreams.settings, tool_service_url=held.url)
        with gateway(dataclasses.replace(upstreams, settings=settings), api_keys="") as server:
            async with client_of(server, timeout=30) as client:
                created = await client.post("/api/tasks", json={"query": "hi", "agentType": 0})
                url = f"/api/tasks/{created.json()['taskId']}/files/big.bin"
                with anyio.fail_after(20):
                    async with client.stream("GET", url) as response:
                        chunks = response.aiter_raw()
                        first = await anext(chunks)  # while the service still holds the rest
                        release.set()
                        rest = b"".join([chunk async for chunk in chunks])

    assert response.status_code == 200
    assert first == b"first bytes;" and rest == b" the rest"
    assert seen == [f"Bearer {upstreams.settings.service_token}"]
