"""The webhook outbox across real gateway processes on one Redis: a delivery outlives the
replica that accepted the task, and retries outlive the replica that made the last attempt."""

from __future__ import annotations

import collections
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks import Webhook

from gateway.protocol import new_task_id
from tests.gateway.test_faults import FAST_LEASES, replica, wait_running
from tests.gateway.test_webhooks import SECRET, Receiver, receiving

pytestmark = pytest.mark.slow

WORDS = 400


def env_for(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "ECHO_TOKEN_DELAY_MS": "10",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "WEBHOOK_POLL_INTERVAL": "0.05",
        **FAST_LEASES,
        # A lease lapses after 5 s, not 1: a survivor rerunning a task on a loaded machine
        # (a parallel test run) must not lose it to a slow loop turn.
        "LEASE_TTL": "5",
        **extra,
    }


def wait_for(check: Any, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def verified(receiver: Receiver) -> Iterator[dict[str, Any]]:
    """Each call's payload, its signature checked as a receiver would (``standardwebhooks``)."""
    hook = Webhook(SECRET)
    for call in receiver.calls:
        yield hook.verify(call.body, call.headers)


def test_a_webhook_is_sent_by_the_survivor_when_the_accepting_replica_is_killed(
    redis_url: str,
) -> None:
    env = env_for(redis_url, new_task_id(), TASK_RETRY="1")
    query = " ".join(f"w{i}" for i in range(WORDS))
    with (
        receiving() as (receiver, url),
        replica(env) as (url_b, _),
        replica(env) as (url_c, _),
        replica(env) as (url_a, proc_a),
    ):
        body = {"query": query, "agentType": 0, "callbackUrl": url}
        task_ids = [httpx.post(f"{url_a}/api/tasks", json=body).json()["taskId"] for _ in range(3)]
        for task_id in task_ids:
            wait_running(url_a, task_id, 10)
        proc_a.send_signal(signal.SIGKILL)  # A started them (a free slot) and ends none
        proc_a.wait(10)
        wait_for(lambda: len(receiver.calls) >= len(task_ids), "no webhook from B or C")
        time.sleep(1.0)  # a second sender, if any, would show in this time
        records = [httpx.get(f"{url_b}/api/tasks/{t}/webhook").json() for t in task_ids]
        logs = [
            httpx.get(f"{url_c}/api/tasks/{t}", params={"after": 0, "limit": 1000}).json()
            for t in task_ids
        ]
    per_id = collections.Counter(call.headers["webhook-id"] for call in receiver.calls)
    assert sorted(per_id) == sorted(f"msg_{t}" for t in task_ids)
    assert set(per_id.values()) == {1}  # once per webhook-id, though two replicas poll
    payloads = {p["data"]["taskId"]: p for p in verified(receiver)}
    for task_id, record, log in zip(task_ids, records, logs, strict=True):
        payload = payloads[task_id]
        requeued = [m for m in log["messages"] if m.get("reason") == "retry"]
        assert len(requeued) == 1  # A died before the end; a survivor reran it (TASK_RETRY=1)
        assert payload["type"] == "task.completed"
        assert payload["data"]["result"] == query
        assert record["status"] == "delivered" and record["attempts"] == 1
        assert [a["status"] for a in record["history"]] == [200]
        # lastSeq is the cursor of the log's end, read from any replica
        assert log["messages"][-1]["seq"] == payload["data"]["lastSeq"]
        assert log["messages"][-1]["finish"] is True


def test_retries_survive_a_restart_of_the_replica_that_made_the_last_attempt(
    redis_url: str,
) -> None:
    env = env_for(redis_url, new_task_id(), WEBHOOK_BACKOFF="2", WEBHOOK_MAX_ATTEMPTS="5")
    with receiving([500, 503]) as (receiver, url):
        with replica(env) as (url_a, proc_a):
            body = {"query": "retry me", "agentType": 0, "callbackUrl": url}
            task_id = httpx.post(f"{url_a}/api/tasks", json=body).json()["taskId"]
            route = f"/api/tasks/{task_id}/webhook"
            wait_for(lambda: httpx.get(url_a + route).json()["attempts"] == 1, "no 1st attempt")
            first = httpx.get(url_a + route).json()
            proc_a.send_signal(signal.SIGKILL)  # its retry is due in 2 s
            proc_a.wait(10)
        assert len(receiver.calls) == 1
        with replica(env) as (url_b, _):  # a fresh process: nothing of A's memory
            wait_for(lambda: httpx.get(url_b + route).json()["status"] == "delivered", "lost")
            last = httpx.get(url_b + route).json()
    assert first["status"] == "pending" and first["lastStatus"] == 500
    assert first["nextAttemptAt"] >= first["lastAttemptAt"] + 1900
    assert last["attempts"] == 3
    assert [a["status"] for a in last["history"]] == [500, 503, 200]
    assert [a["error"] for a in last["history"]] == ["HTTP 500", "HTTP 503", None]
    assert last["history"][1]["at"] >= first["nextAttemptAt"]
    assert len({call.headers["webhook-id"] for call in receiver.calls}) == 1
    assert [orjson.loads(c.body)["data"]["taskId"] for c in receiver.calls] == [task_id] * 3
    assert len(list(verified(receiver))) == 3
