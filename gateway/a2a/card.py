"""The agent card (``/.well-known/agent-card.json``): our agents as skills.

The card names the JSON-RPC endpoint by an absolute URL. Behind a proxy set
``A2A_PUBLIC_URL`` (e.g. ``https://agents.example.com``); otherwise the URL the request came
in on is used, so the card is right for whoever reads it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.tasks import TaskRegistry

SKILLS = {
    0: ("Echo", "Streams the words of the message back, one by one (a smoke test)."),
    1: ("Relay", "Passes the message to the configured model and streams its answer."),
    3: ("Plan and execute", "Plans the work in steps, runs tools for each step, summarises."),
    5: ("ReAct", "Reasons and acts in a loop with tools (search, code, files) until it answers."),
}
"""Names and descriptions of the built-in agents; a user's own handler gets its name."""


def build_card(registry: TaskRegistry, url: str, default_agent_type: int, auth: bool) -> AgentCard:
    """The card for a gateway whose JSON-RPC endpoint is ``url``."""
    skills = []
    for agent_type in registry.agent_types:
        registration = registry.get(agent_type)
        name = registration.name if registration else str(agent_type)
        title, description = SKILLS.get(agent_type, (name, f"The {name} task handler."))
        if agent_type == default_agent_type:
            description += " The default: a message without metadata.agentType runs it."
        else:
            description += f" Send metadata.agentType = {agent_type} to run it."
        skills.append(
            AgentSkill(
                id=name, name=title, description=description, tags=[name, f"agentType:{agent_type}"]
            )
        )
    card = AgentCard(
        name="Agent Stream Gateway",
        description="LLM agents whose work streams from a durable log: every task can be "
        "re-attached (SubscribeToTask) on any replica and resumed after the last event id.",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        version="0.1.0",
        capabilities=AgentCapabilities(streaming=True, push_notifications=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain", "application/json"],
        skills=skills,
    )
    if auth:
        card.security_schemes["bearer"].CopyFrom(
            SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="Bearer", description="An API key of the gateway (API_KEYS)."
                )
            )
        )
        requirement = SecurityRequirement()
        requirement.schemes["bearer"].CopyFrom(StringList())
        card.security_requirements.append(requirement)
    return card


def card_endpoint(
    registry: TaskRegistry, path: str, public_url: str | None, default_agent_type: int, auth: bool
) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint serving the card, the endpoint URL taken from the request."""

    async def agent_card(request: Request) -> Response:
        base = public_url or str(request.base_url).rstrip("/")
        card = build_card(registry, base + path, default_agent_type, auth)
        return JSONResponse(agent_card_to_dict(card))

    return agent_card


__all__ = ["build_card", "card_endpoint"]
