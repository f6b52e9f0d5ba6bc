"""Helpers of the A2A tests: the SDK's client on a gateway, messages, a push receiver."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from a2a.client import Client, ClientConfig, create_client
from a2a.types import Message, Part, Role, SendMessageConfiguration, SendMessageRequest, Task
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.helpers import ThreadedServer, serve_app

VERSION = {"A2A-Version": "1.0"}


def message(text: str, agent_type: int = 0, **fields: Any) -> Message:
    """A user message that runs ``agent_type`` (the echo agent by default)."""
    msg = Message(message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=[Part(text=text)])
    msg.metadata.update({"agentType": agent_type})
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def send_request(text: str, *, immediately: bool = False, **fields: Any) -> SendMessageRequest:
    """``SendMessage`` params for ``text`` (``immediately``: ``returnImmediately``)."""
    return SendMessageRequest(
        message=message(text, **fields),
        configuration=SendMessageConfiguration(return_immediately=immediately),
    )


async def sent_task(client: Client, request: SendMessageRequest) -> Task:
    """Send ``request`` (without streaming); the task it answers."""
    events = [event async for event in client.send_message(request)]
    return events[0].task


@contextlib.asynccontextmanager
async def sdk_client(
    url: str, *, streaming: bool = True, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[Client, httpx.AsyncClient]]:
    """The SDK's client for the gateway at ``url`` (read from its card), and its httpx client."""
    async with httpx.AsyncClient(timeout=30, headers=headers or {}) as http:
        client = await create_client(url, ClientConfig(httpx_client=http, streaming=streaming))
        yield client, http


async def rpc(
    http: httpx.AsyncClient, url: str, method: str, params: dict[str, Any]
) -> dict[str, Any]:
    """One JSON-RPC call to the gateway's A2A endpoint; the whole answer."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    response = await http.post(url + "/a2a", json=body, headers=VERSION)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@dataclasses.dataclass
class Receiver:
    """A push-notification receiver on 127.0.0.1: what it got, and an event per delivery."""

    server: ThreadedServer
    requests: list[tuple[dict[str, str], bytes]] = dataclasses.field(default_factory=list)
    arrived: threading.Event = dataclasses.field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return self.server.url + "/hook"

    async def wait(self, timeout: float = 10.0) -> tuple[dict[str, str], bytes]:
        """The first delivery, waiting at most ``timeout`` seconds."""
        arrived = await asyncio.to_thread(self.arrived.wait, timeout)
        assert arrived, "no push notification arrived"
        return self.requests[0]


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    """Run a :class:`Receiver` for the block."""
    holder: list[Receiver] = []

    async def hook(request: Request) -> Response:
        holder[0].requests.append((dict(request.headers), await request.body()))
        holder[0].arrived.set()
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    with serve_app(app) as server:
        holder.append(Receiver(server))
        yield holder[0]
