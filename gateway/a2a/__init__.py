"""A2A (Agent2Agent, v1.0) over the gateway's own tasks, log and store.

``install_a2a(app, settings)`` serves the agent card at ``/.well-known/agent-card.json`` and
the JSON-RPC endpoint at ``settings.path`` (``/a2a``): ``SendMessage``,
``SendStreamingMessage``, ``GetTask``, ``CancelTask``, ``SubscribeToTask``, ``ListTasks`` and
the push-notification config methods.

Choices, and why:

- **No second task system.** The SDK's ``DefaultRequestHandler`` runs an ``AgentExecutor``
  into an in-process ``EventQueue`` and keeps tasks in a ``TaskStore``: a task would live in
  one process, a subscription could only reach the replica running it, and our log would be a
  copy. Instead :class:`GatewayRequestHandler` implements the SDK's ``RequestHandler``
  interface — the seam all its transports call — directly over our task manager and store. An
  A2A task *is* one of our tasks (same id; ``POST /api/tasks`` and the A2A endpoint see the
  same thing); its context id and first message sit in the task's notes.
- **The log is the event source.** :mod:`gateway.a2a._project` folds a task's messages into
  A2A events (states: PENDING→submitted, RUNNING→working, COMPLETED→completed,
  FAILED→failed, CANCELLED→canceled; thoughts and tool work → status updates with a message;
  the answer's deltas → artifact chunks, its final frame the last chunk). ``GetTask`` folds
  the whole log; a stream replays it and then tails it from the store, so it works on any
  replica.
- **SDK where it fits.** Types (protobuf), JSON-RPC parsing, dispatch, errors and the
  ``A2A-Version`` check are the SDK's. The two streaming methods are answered by our own SSE
  (:mod:`gateway.a2a.route`) because the SDK's SSE has no event ids: ours carry ``id: <seq>``
  and ``SubscribeToTask`` honours ``Last-Event-ID`` (exact resume).
- **Push notifications** are configs beside the task, delivered with the webhooks' SSRF guard,
  signature and back-off (:mod:`gateway.a2a.push`).
- **API keys** apply as on the rest of the API: with ``API_KEYS`` set the endpoint needs a key,
  a task of another key is ``TaskNotFoundError`` and listings hold only the caller's tasks.
  The card is public (it is how a client learns that it needs a key).

Deliberate deviations and limits: our tasks take one message — a message naming an existing
task is refused (``UnsupportedOperationError``), so ``input-required`` never occurs; a blocking
``SendMessage`` answers when the task has ended (as the spec says; ``returnImmediately`` for at
once); a push notification is sent once, when the task ends (as our webhooks are), by whichever
replica is alive (the durable outbox); ``ListTasks`` scans at most 10,000 tasks; there is no
extended card.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from starlette.applications import Starlette
from starlette.routing import Route

from gateway._env import env_number
from gateway.a2a import _log
from gateway.a2a._notes import task_notes
from gateway.a2a.card import build_card, card_endpoint
from gateway.a2a.handler import GatewayRequestHandler
from gateway.a2a.push import NOTE, PushConfigs
from gateway.a2a.route import JsonRpcEndpoint
from gateway.protocol import TaskRecord

CARD_PATH = AGENT_CARD_WELL_KNOWN_PATH
"""Where the agent card is served (open: no API key needed)."""

__all__ = ["CARD_PATH", "A2ASettings", "GatewayRequestHandler", "build_card", "install_a2a"]


@dataclasses.dataclass(frozen=True, slots=True)
class A2ASettings:
    """``A2A_PATH`` (``/a2a``), ``A2A_AGENT_TYPE`` (the agent a message runs unless its
    ``metadata.agentType`` says otherwise; default 5, ReAct) and ``A2A_PUBLIC_URL`` (the
    base URL the card names; default: the URL of the request)."""

    path: str = "/a2a"
    default_agent_type: int = 5
    public_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> A2ASettings:
        """Read the variables above (default ``os.environ``); bad values raise ``ValueError``."""
        env = os.environ if environ is None else environ
        path = env.get("A2A_PATH", "/a2a")
        if not path.startswith("/"):
            raise ValueError("A2A_PATH must start with /")
        return cls(
            path=path,
            default_agent_type=int(env_number(env, "A2A_AGENT_TYPE", 5, minimum=0)),
            public_url=(env.get("A2A_PUBLIC_URL") or "").rstrip("/") or None,
        )


def install_a2a(app: Starlette, settings: A2ASettings | None = None) -> GatewayRequestHandler:
    """Add the A2A card and endpoint to the gateway ``app`` (after ``install_webhooks``).

    The card's path is among the security middleware's open paths: a client reads the card
    before it has a key.
    """
    settings = settings or A2ASettings()
    store, notes = app.state.store, task_notes(app)
    push = PushConfigs(store, notes, app.state)

    async def snapshot(record: TaskRecord) -> Any:
        return await _log.snapshot(store, notes, record)

    push.snapshot = snapshot
    auth = app.state.settings.security.auth_enabled
    registry = app.state.registry
    card = build_card(registry, settings.path, settings.default_agent_type, auth)
    handler = GatewayRequestHandler(card, settings.default_agent_type, push)
    endpoint = card_endpoint(
        registry, settings.path, settings.public_url, settings.default_agent_type, auth
    )
    app.router.routes.append(Route(CARD_PATH, endpoint, methods=["GET"]))
    app.router.routes.append(
        Route(settings.path, JsonRpcEndpoint(handler).handle, methods=["POST"])
    )
    app.state.outbox.channels[NOTE] = push  # delivered by the outbox the webhooks run
    return handler
