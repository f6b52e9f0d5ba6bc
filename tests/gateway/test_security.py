"""API keys, task ownership, CORS, size limits and the rate limit (``gateway.security``)."""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import anyio
import pytest

from gateway.app import create_app
from gateway.security import SecuritySettings, install_security, parse_api_keys
from gateway.settings import Settings
from gateway.store import MemoryStore, StoreUnavailable, StreamStore
from tests.gateway.support import INTAKE_WAIT, read_sse
from tests.helpers import ThreadedServer, client_of, serve_app

pytestmark = pytest.mark.anyio

KEYS = "alice:sk-alice-1,alice:sk-alice-2,bob:sk-bob,sk-plain"
ALICE = {"Authorization": "Bearer sk-alice-1"}
ALICE_ROTATED = {"Authorization": "Bearer sk-alice-2"}
BOB = {"Authorization": "Bearer sk-bob"}
ECHO = {"query": "a b", "agentType": 0}


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


@contextlib.contextmanager
def secured(
    security: SecuritySettings,
    redis_url: str | None = None,
    store: StreamStore | None = None,
    **overrides: Any,
) -> Iterator[ThreadedServer]:
    """A gateway with ``install_security`` applied (a no-op re-configuration once wired)."""
    fields = {
        "echo_token_delay_ms": 0.0,
        "intake_wait": INTAKE_WAIT,
        "redis_prefix": f"agw-test-{secrets.token_hex(4)}",
        **overrides,
    }
    settings = dataclasses.replace(Settings.from_env({}), redis_url=redis_url, **fields)
    app = create_app(settings, store)
    install_security(app, security)
    with serve_app(app) as server:
        yield server


def with_keys(**fields: Any) -> SecuritySettings:
    return SecuritySettings(api_keys=parse_api_keys(KEYS), **fields)


# -- settings ----------------------------------------------------------------------------------
def test_api_keys_are_parsed_as_names_and_hashes_and_never_shown() -> None:
    settings = SecuritySettings.from_env({"API_KEYS": KEYS, "RATE_LIMIT_RPS": "2.5"})
    assert settings.name_of("sk-alice-1") == settings.name_of("sk-alice-2") == "alice"
    assert settings.name_of("sk-bob") == "bob"
    assert (settings.name_of("sk-plain") or "").startswith("key-")
    assert settings.name_of("sk-nobody") is None
    assert settings.burst == 3
    assert "sk-" not in repr(settings) and "sk-" not in str(settings.api_keys)
    assert not SecuritySettings.from_env({}).auth_enabled
    with pytest.raises(ValueError):
        SecuritySettings.from_env({"API_KEYS": "name:"})
    with pytest.raises(ValueError):
        SecuritySettings.from_env({"RATE_LIMIT_RPS": "fast"})


# -- auth --------------------------------------------------------------------------------------
async def test_without_a_valid_key_the_api_answers_401_with_a_bearer_challenge() -> None:
    with secured(with_keys()) as server:
        async with client_of(server) as client:
            missing = await client.get("/api/tasks")
            wrong = await client.get("/api/tasks", headers={"Authorization": "Bearer nope"})
            basic = await client.post(
                "/api/tasks", json={"query": "x"}, headers={"Authorization": "Basic Zm9vOmJhcg=="}
            )
            health = await client.get("/healthz")
            ready = await client.get("/readyz")
            ok = await client.get("/api/tasks", headers=ALICE)
    for response in (missing, wrong, basic):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "unauthorized"
    assert "invalid_token" in wrong.headers["www-authenticate"]
    assert health.status_code == ready.status_code == ok.status_code == 200


async def test_with_auth_off_no_key_is_needed() -> None:
    with secured(SecuritySettings()) as server:
        async with client_of(server) as client:
            response = await client.post("/api/tasks", json={"query": "hi", "agentType": 0})
    assert response.status_code == 202


async def test_a_task_is_visible_only_to_the_key_name_that_made_it(store_url: str | None) -> None:
    with secured(with_keys(), store_url) as server:
        async with client_of(server) as client:
            body = {"query": "mine only", "agentType": 0}
            created = await client.post("/api/tasks", json=body, headers=ALICE)
            task_id = created.json()["taskId"]
            with anyio.fail_after(10):
                own = await read_sse(client, f"/api/tasks/{task_id}/events", headers=ALICE)
            rotated = await client.get(f"/api/tasks/{task_id}", headers=ALICE_ROTATED)
            theirs = [
                await client.get(f"/api/tasks/{task_id}", headers=BOB),
                await client.get(f"/api/tasks/{task_id}/events", headers=BOB),
                await client.post(f"/api/tasks/{task_id}/cancel", headers=BOB),
                await client.get(f"/api/tasks/{task_id}/webhook", headers=BOB),
                await client.get(f"/api/tasks/{task_id}/files/report.md", headers=BOB),
                await client.get(f"/api/tasks/{task_id}/preview/report.md", headers=BOB),
            ]
            bob_task = (await client.post("/api/tasks", json=body, headers=BOB)).json()["taskId"]
            alice_list = (await client.get("/api/tasks", headers=ALICE)).json()
            bob_list = (await client.get("/api/tasks", headers=BOB)).json()
            batch = await client.get(
                "/api/tasks", params={"ids": f"{task_id},{bob_task}"}, headers=BOB
            )
    assert created.status_code == 202
    assert own.events[-1]["messageType"] == "result"
    assert rotated.status_code == 200
    for response in theirs:
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert [t["taskId"] for t in alice_list["tasks"]] == [task_id]
    assert [t["taskId"] for t in bob_list["tasks"]] == [bob_task]
    assert batch.status_code == 200
    assert [t["taskId"] for t in batch.json()["tasks"]] == [bob_task]
    assert batch.json()["missing"] == [task_id]


class NotesDown(MemoryStore):
    """A store that keeps records and logs but cannot write the notes kept beside a task."""

    async def annotate(self, task_id: str, kind: str, fields: Mapping[str, str], ttl: int) -> None:
        raise StoreUnavailable("the notes are down")


async def test_a_task_is_its_creator_s_from_the_write_that_creates_it() -> None:
    # Who may see a task is part of its record, not a second write after it: nothing can
    # leave a created task that nobody (or anybody) may read.
    with secured(with_keys(), store=NotesDown(result_ttl=60)) as server:
        async with client_of(server) as client:
            created = await client.post("/api/tasks", json=ECHO, headers=ALICE)
            task_id = created.json()["taskId"]
            mine = await client.get(f"/api/tasks/{task_id}", headers=ALICE)
            theirs = await client.get(f"/api/tasks/{task_id}", headers=BOB)
            listed = (await client.get("/api/tasks", headers=ALICE)).json()
    assert created.status_code == 202
    assert mine.status_code == 200 and mine.json()["taskId"] == task_id
    assert theirs.status_code == 404
    assert [t["taskId"] for t in listed["tasks"]] == [task_id]


async def test_a_listing_page_holds_limit_tasks_of_the_key_with_others_interleaved(
    store_url: str | None,
) -> None:
    with secured(with_keys(), store_url) as server:
        async with client_of(server) as client:
            mine: list[str] = []
            for _ in range(3):
                created = await client.post("/api/tasks", json=ECHO, headers=ALICE)
                mine.append(created.json()["taskId"])
                await client.post("/api/tasks", json=ECHO, headers=BOB)
            pages: list[dict[str, Any]] = []
            cursor: str | None = None
            for _ in range(4):  # bounded: two pages are expected
                params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
                page = (await client.get("/api/tasks", params=params, headers=ALICE)).json()
                pages.append(page)
                cursor = page["nextCursor"]
                if cursor is None:
                    break
    assert [len(page["tasks"]) for page in pages] == [2, 1]
    assert [t["taskId"] for page in pages for t in page["tasks"]] == mine[::-1]


async def test_a_post_sse_submission_is_owned_too() -> None:
    with secured(with_keys()) as server:
        async with client_of(server) as client:
            headers = {**ALICE, "Accept": "text/event-stream"}
            with anyio.fail_after(10):
                streamed = await read_sse(
                    client, "/api/tasks", method="POST", headers=headers, json=ECHO
                )
            task_id = streamed.headers["x-task-id"]
            mine = await client.get(f"/api/tasks/{task_id}", headers=ALICE)
            theirs = await client.get(f"/api/tasks/{task_id}", headers=BOB)
    assert streamed.status == 200
    assert mine.status_code == 200 and theirs.status_code == 404


async def test_idempotency_keys_are_scoped_to_the_key_name() -> None:
    with secured(with_keys()) as server:
        async with client_of(server) as client:
            key = {"Idempotency-Key": "same-key"}
            body = {"query": "once", "agentType": 0}
            first = await client.post("/api/tasks", json=body, headers={**ALICE, **key})
            again = await client.post("/api/tasks", json=body, headers={**ALICE_ROTATED, **key})
            other = await client.post("/api/tasks", json=body, headers={**BOB, **key})
            too_long = await client.post(
                "/api/tasks", json=body, headers={**BOB, "Idempotency-Key": "k" * 300}
            )
    assert first.json()["taskId"] == again.json()["taskId"] != other.json()["taskId"]
    assert too_long.status_code == 400


# -- CORS --------------------------------------------------------------------------------------
async def test_cors_allows_only_listed_origins_with_credentials() -> None:
    allowed, denied = "https://app.example", "https://evil.example"
    with secured(with_keys(), cors_origins=(allowed,)) as server:
        async with client_of(server) as client:
            good = await client.get("/api/tasks", headers={**ALICE, "Origin": allowed})
            bad = await client.get("/api/tasks", headers={**ALICE, "Origin": denied})
            preflight = await client.options(
                "/api/tasks",
                headers={
                    "Origin": allowed,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type",
                },
            )
            refused = await client.get("/api/tasks", headers={"Origin": allowed})
    assert good.headers["access-control-allow-origin"] == allowed
    assert good.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in bad.headers
    assert preflight.status_code == 200  # a preflight carries no key and needs none
    assert preflight.headers["access-control-allow-origin"] == allowed
    assert refused.status_code == 401  # ... and the 401 is readable by the allowed page
    assert refused.headers["access-control-allow-origin"] == allowed


# -- size limits -------------------------------------------------------------------------------
async def _chunks(total: int, size: int = 500) -> AsyncIterator[bytes]:
    yield b'{"agentType": 0, "query": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}'


async def test_bodies_over_the_limit_get_413_even_when_chunked() -> None:
    with secured(SecuritySettings(max_body_bytes=1000)) as server:
        async with client_of(server) as client:
            declared = await client.post("/api/tasks", content=b"{" + b" " * 2000 + b"}")
            chunked = await client.post(
                "/api/tasks",
                content=_chunks(5000),
                headers={"Content-Type": "application/json"},
            )
            small = await client.post(
                "/api/tasks",
                content=_chunks(100, size=50),
                headers={"Content-Type": "application/json"},
            )
    assert "content-length" not in chunked.request.headers
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json()["error"] == {
            "code": "body_too_large",
            "message": "the body exceeds 1000 bytes",
        }
    assert small.status_code == 202


async def test_overlong_urls_and_headers_are_refused() -> None:
    settings = SecuritySettings(max_url_bytes=2048, max_header_bytes=4096)
    with secured(settings) as server:
        async with client_of(server) as client:
            url = await client.get("/api/tasks", params={"cursor": "c" * 3000})
            headers = await client.get("/api/tasks", headers={"X-Padding": "p" * 5000})
            fine = await client.get("/api/tasks", params={"cursor": ""})
    assert url.status_code == 414 and url.json()["error"]["code"] == "uri_too_long"
    assert headers.status_code == 431
    assert headers.json()["error"]["code"] == "headers_too_large"
    assert fine.status_code == 200


# -- rate limit --------------------------------------------------------------------------------
async def test_the_rate_limit_is_per_key_with_retry_after(store_url: str | None) -> None:
    with secured(with_keys(rate_limit_rps=0.5, rate_limit_burst=2), store_url) as server:
        async with client_of(server) as client:
            alice = [(await client.get("/api/tasks", headers=ALICE)).status_code for _ in range(2)]
            limited = await client.get("/api/tasks", headers=ALICE_ROTATED)  # same name
            bob = await client.get("/api/tasks", headers=BOB)
            health = [(await client.get("/healthz")).status_code for _ in range(5)]
    assert alice == [200, 200]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) == 2
    assert bob.status_code == 200
    assert health == [200] * 5


async def test_without_auth_the_rate_limit_is_per_client_address(store_url: str | None) -> None:
    with secured(SecuritySettings(rate_limit_rps=1, rate_limit_burst=1), store_url) as server:
        async with client_of(server) as client:
            first = await client.get("/api/tasks")
            second = await client.get("/api/tasks")
    assert first.status_code == 200
    assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
