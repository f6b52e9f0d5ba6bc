"""Bad input: schemathesis against the OpenAPI document, hypothesis against the SSE decoder
and the protocol models. Bounded (examples per operation, request timeouts) to stay fast."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    negative_data_rejection,
    positive_data_acceptance,
)

from gateway.app import create_app
from gateway.openapi import build_openapi, install_openapi
from gateway.protocol import MESSAGE_TYPES, PAYLOAD_FIELDS, AgentRequest, encode_message
from gateway.security import SecuritySettings, install_security
from gateway.settings import Settings
from gateway.upstream.errors import UpstreamProtocolError
from gateway.upstream.sse import ServerSentEvent, SSEDecoder
from gateway.webhooks import WebhookSettings, install_webhooks
from tests.helpers import serve_app

SCHEMA = schemathesis.openapi.from_dict(build_openapi())
# Known deviations, reported in the issue note: GET and POST /api/tasks are two Starlette routes,
# so a 405 on that path advertises ``Allow: POST`` only; and AgentRequest validates in pydantic's
# lax mode (``"cancelOnDisconnect": 0`` is taken as false), which a JSON Schema cannot express.
EXCLUDED_CHECKS = [allow_header_conformance, negative_data_rejection]


async def _no_dns(host: str, port: int) -> list[str]:
    raise OSError("the fuzz test resolves no names")


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    """The gateway with everything installed, echo agent (agentType 0) without delays."""
    fields: dict[str, Any] = {"echo_token_delay_ms": 0.0, "sse_max_age": 5.0, "max_queued": 50}
    app = create_app(dataclasses.replace(Settings.from_env({}), **fields))
    install_security(app, SecuritySettings())
    install_webhooks(app, WebhookSettings(), resolve=_no_dns)
    install_openapi(app)
    with serve_app(app) as server:
        yield server.url


def test_the_document_is_served_and_describes_every_native_route(api_url: str) -> None:
    import httpx

    served = httpx.get(api_url + "/openapi.json").json()
    assert served == orjson.loads(orjson.dumps(build_openapi()))
    assert served["openapi"].startswith("3.1")
    operations = {(m.upper(), p) for p, item in served["paths"].items() for m in item}
    assert operations >= {
        ("POST", "/api/tasks"),
        ("GET", "/api/tasks"),
        ("GET", "/api/tasks/{task_id}"),
        ("GET", "/api/tasks/{task_id}/events"),
        ("POST", "/api/tasks/{task_id}/cancel"),
        ("GET", "/api/tasks/{task_id}/webhook"),
        ("GET", "/api/tasks/{task_id}/files/{file_name}"),
        ("GET", "/api/tasks/{task_id}/preview/{file_name}"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    }


@SCHEMA.parametrize()
@pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisDeprecationWarning"
)  # schemathesis
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_generated_requests_without_500s_or_hangs(
    case: schemathesis.Case, api_url: str
) -> None:
    excluded = list(EXCLUDED_CHECKS)
    if case.path == "/api/tasks":
        # Valid by the schema yet refused by design: an agentType nobody registered, a
        # callbackUrl that does not resolve to a public address (no names resolve here), a
        # cursor the API did not hand out (cursors are opaque).
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=api_url, timeout=10, excluded_checks=excluded)


# -- the SSE decoder ---------------------------------------------------------------------------
def _decode(chunks: list[bytes]) -> tuple[list[ServerSentEvent], list[str], int | None]:
    comments: list[str] = []
    decoder = SSEDecoder(on_comment=comments.append)
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events, comments, decoder.retry


_SSE_PIECES = st.sampled_from(
    [
        *(b"data:", b"data: ", b"id: ", b"id:\x00", b"event: x", b"retry: 10", b"retry: x"),
        *(b": c", b"\r", b"\n", b"\r\n", b"\n\n", b"\xef\xbb\xbf", b"\xe2\x82", b"\xac", b"\xff"),
        b"x",
    ]
)
_SSE_STREAMS = st.one_of(st.binary(max_size=300), st.lists(_SSE_PIECES, max_size=40).map(b"".join))


@settings(max_examples=300, deadline=None)
@given(_SSE_STREAMS)
def test_the_sse_decoder_never_raises_on_arbitrary_bytes(stream: bytes) -> None:
    events, _, _ = _decode([stream])
    for event in events:
        assert "\r" not in event.data and "\n" not in event.id and "\0" not in event.id


@settings(max_examples=300, deadline=None)
@given(_SSE_STREAMS, st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_splitting_the_input_anywhere_gives_the_same_events(stream: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert _decode(chunks) == _decode([stream])
    assert _decode([bytes([b]) for b in stream]) == _decode([stream])


def test_an_overlong_line_is_the_one_documented_error() -> None:
    decoder = SSEDecoder(max_line=10)
    with pytest.raises(UpstreamProtocolError):
        decoder.feed(b"data: " + b"x" * 20)


# -- the protocol models -----------------------------------------------------------------------
# What orjson encodes faithfully: 64-bit integers, finite floats (it writes inf as null).
_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | _INTS
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
_REQUEST_KEYS = st.sampled_from(
    ["query", "agentType", "requestId", "callbackUrl", "cancelOnDisconnect", "files", "extra"]
)
_REQUESTS = st.one_of(_JSON, st.dictionaries(_REQUEST_KEYS, _JSON, max_size=6))


@settings(max_examples=300, deadline=None)
@given(_REQUESTS)
def test_agent_request_validation_raises_only_validation_error(value: Any) -> None:
    try:
        request = AgentRequest.model_validate(value)
    except ValidationError:
        return
    dumped = request.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert AgentRequest.model_validate(dumped) == request


_BODIES = st.fixed_dictionaries(
    {
        "taskId": st.text(min_size=1, max_size=30),
        "requestId": st.text(max_size=30),
        "messageId": st.text(min_size=1, max_size=30),
        "messageType": st.sampled_from(sorted(MESSAGE_TYPES)),
        "messageTime": st.integers(min_value=0, max_value=2**53),
        "isFinal": st.booleans(),
        "finish": st.booleans(),
    }
)


@settings(max_examples=300, deadline=None)
@given(_BODIES, st.integers(min_value=1, max_value=2**53), _JSON)
def test_messages_round_trip_through_their_encoding(
    body: dict[str, Any], seq: int, payload: Any
) -> None:
    body = {**body, PAYLOAD_FIELDS[body["messageType"]]: payload}
    message = encode_message(seq, body)
    decoded = message.json()
    assert decoded == {"seq": seq, **body}
    assert next(iter(decoded)) == "seq"
    assert message.finish is body["finish"]
    assert message.frame == b"id: %d\ndata: %s\n\n" % (seq, message.data)
    events, _, _ = _decode([message.frame])
    assert [(e.id, orjson.loads(e.data)) for e in events] == [(str(seq), decoded)]
