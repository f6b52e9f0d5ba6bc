"""The lockout of addresses that keep presenting wrong API keys (``gateway.auth_failures``)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.auth_failures import AuthFailureSettings, FailedAuthLimiter
from gateway.security import SecuritySettings, parse_api_keys
from gateway.settings import Settings
from tests.gateway.support import INTAKE_WAIT
from tests.helpers import ThreadedServer, serve_app

pytestmark = pytest.mark.anyio

RIGHT = {"Authorization": "Bearer sk-right"}


@contextlib.contextmanager
def keyed_gateway(**auth_failures: Any) -> Iterator[ThreadedServer]:
    """A gateway with one API key and the lockout's defaults (or ``auth_failures``)."""
    settings = dataclasses.replace(
        Settings.from_env({}),
        echo_token_delay_ms=0.0,
        intake_wait=INTAKE_WAIT,
        security=SecuritySettings(api_keys=parse_api_keys("alice:sk-right")),
        auth_failures=AuthFailureSettings(**auth_failures),
    )
    with serve_app(create_app(settings)) as server:
        yield server


@contextlib.asynccontextmanager
async def client_from(server: ThreadedServer, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose connections leave from ``address`` (a loopback address)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=server.url, transport=transport, timeout=20) as client:
        yield client


async def test_a_hundred_wrong_keys_lock_the_address_out_after_the_limit() -> None:
    limit = AuthFailureSettings().limit
    with keyed_gateway() as server:
        async with client_from(server, "127.0.0.1") as guesser:
            guesses = [
                await guesser.get("/api/tasks", headers={"Authorization": f"Bearer sk-{n}"})
                for n in range(100)
            ]
            right_key_same_address = await guesser.get("/api/tasks", headers=RIGHT)
            health = await guesser.get("/healthz")
        async with client_from(server, "127.0.0.2") as neighbour:
            right_key_elsewhere = await neighbour.get("/api/tasks", headers=RIGHT)
    statuses = [g.status_code for g in guesses]
    assert statuses == [401] * limit + [429] * (100 - limit)
    for refused in (guesses[-1], right_key_same_address):
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_failed_auth"
        assert 1 <= int(refused.headers["retry-after"]) <= AuthFailureSettings().window
    assert health.status_code == 200
    assert right_key_elsewhere.status_code == 200


async def test_requests_without_a_key_are_refused_but_never_lock_the_address() -> None:
    with keyed_gateway(limit=3) as server:
        async with client_from(server, "127.0.0.1") as client:
            keyless = [(await client.get("/api/tasks")).status_code for _ in range(10)]
            right = await client.get("/api/tasks", headers=RIGHT)
    assert keyless == [401] * 10
    assert right.status_code == 200


async def test_a_limit_of_zero_turns_the_lockout_off() -> None:
    with keyed_gateway(limit=0) as server:
        async with client_from(server, "127.0.0.1") as client:
            wrong = {"Authorization": "Bearer sk-wrong"}
            statuses = {
                (await client.get("/api/tasks", headers=wrong)).status_code for _ in range(30)
            }
    assert statuses == {401}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_lockout_ends_after_its_window_and_the_count_starts_again() -> None:
    clock = FakeClock()
    limiter = FailedAuthLimiter(AuthFailureSettings(limit=3, window=60.0), clock)
    for _ in range(3):
        limiter.failed("198.51.100.7")
    assert limiter.locked_for("198.51.100.7") == 60.0
    assert limiter.locked_for("198.51.100.8") == 0.0
    clock.now += 59.5
    assert limiter.locked_for("198.51.100.7") == pytest.approx(0.5)
    clock.now += 1.0
    assert limiter.locked_for("198.51.100.7") == 0.0
    assert len(limiter) == 0  # forgotten once its window is over
    limiter.failed("198.51.100.7")
    limiter.failed("198.51.100.7")
    assert limiter.locked_for("198.51.100.7") == 0.0


def test_failures_spread_beyond_the_window_never_lock_an_address() -> None:
    clock = FakeClock()
    limiter = FailedAuthLimiter(AuthFailureSettings(limit=3, window=60.0), clock)
    for _ in range(10):
        limiter.failed("198.51.100.7")
        limiter.failed("198.51.100.7")
        clock.now += 61.0
        assert limiter.locked_for("198.51.100.7") == 0.0


def test_the_limiter_remembers_a_bounded_number_of_addresses() -> None:
    clock = FakeClock()
    limiter = FailedAuthLimiter(AuthFailureSettings(limit=2, max_clients=100), clock)
    limiter.failed("203.0.113.1")
    limiter.failed("203.0.113.1")
    for n in range(10_000):
        limiter.failed(f"2001:db8::{n:x}")
        clock.now += 0.001
    assert len(limiter) == 100
    limiter.failed("2001:db8::ffff:1")
    limiter.failed("2001:db8::ffff:1")
    assert limiter.locked_for("2001:db8::ffff:1") > 0


def test_the_lockout_is_configured_from_the_environment() -> None:
    settings = Settings.from_env({"AUTH_FAILURE_LIMIT": "5", "AUTH_FAILURE_WINDOW": "120"})
    assert (settings.auth_failures.limit, settings.auth_failures.window) == (5, 120.0)
    assert Settings.from_env({}).auth_failures == AuthFailureSettings(limit=20, window=60.0)
    for bad in ({"AUTH_FAILURE_LIMIT": "2.5"}, {"AUTH_FAILURE_LIMIT": "-1"}):
        with pytest.raises(ValueError, match="AUTH_FAILURE_LIMIT"):
            AuthFailureSettings.from_env(bad)
    with pytest.raises(ValueError, match="AUTH_FAILURE_WINDOW"):
        AuthFailureSettings.from_env({"AUTH_FAILURE_WINDOW": "0"})
