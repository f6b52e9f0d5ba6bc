"""The delivering side of the durable outbox (``gateway.store._outbox``): every replica runs one.

:class:`OutboxSender` polls the store's index of due deliveries every ``poll_interval``; for
each task it takes the task's lease (one replica at a time), makes each delivery whose next
attempt is due through its channel (``webhook``: :mod:`gateway.webhooks`; ``a2a-push``:
:mod:`gateway.a2a.push`), and writes back what happened: every attempt (time, HTTP status or
error), the attempt count, and the next attempt time — after ``backoff * 2**n`` seconds
(``Retry-After`` respected), capped at ``max_backoff`` — for network errors, timeouts, 429 and
5xx, up to ``max_attempts``. Since all of it is in the store, a retry survives a restart of the
replica that made the last attempt, and any other replica makes it. Each attempt of a delivery
carries the same Standard Webhooks ``webhook-id``, so a receiver drops duplicates (a replica
that dies between a 2xx and its record makes the receiver see the delivery again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import httpx

from gateway.protocol import TaskRecord, now_ms
from gateway.store import Claim, StreamStore

__all__ = ["Attempt", "Channel", "OutboxSender", "Retries"]

logger = logging.getLogger(__name__)

#: Attempts kept in a delivery's record (the count goes on).
HISTORY = 20


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt came to: ``retry`` says whether another one is worth making."""

    delivered: bool
    retry: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


class Channel(Protocol):
    """One kind of delivery (the part of the name before ``:``)."""

    def message_id(self, task_id: str, name: str) -> str:
        """The ``webhook-id`` of delivery ``name`` (the same on every attempt)."""

    async def attempt(
        self, client: httpx.AsyncClient, record: TaskRecord, name: str, msg_id: str
    ) -> Attempt | None:
        """One attempt; ``None``: there is nothing to deliver any more (e.g. a deleted config)."""


class Retries(Protocol):
    """The settings the sender reads (``WebhookSettings`` has them)."""

    max_attempts: int
    backoff: float
    max_backoff: float
    timeout: float
    poll_interval: float
    max_concurrency: int


def next_delay(retries: Retries, attempts: int, retry_after: float | None) -> float:
    """Seconds before attempt ``attempts + 1``."""
    delay = min(retries.max_backoff, retries.backoff * 2 ** (attempts - 1))
    if retry_after is not None:
        delay = min(retries.max_backoff, max(delay, retry_after))
    return delay


class OutboxSender:
    """Delivers what the outbox holds, from this replica (see the module's docstring)."""

    def __init__(self, store: StreamStore, retries: Callable[[], Retries]) -> None:
        self.store = store
        self.retries = retries
        self.channels: dict[str, Channel] = {}
        self.owner = uuid.uuid4().hex
        self._busy: set[str] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[OutboxSender]:
        """Deliver for the duration of the block (attempts in flight are cut: the lease lapses
        and another replica, or this one later, makes them again)."""
        task = asyncio.create_task(self.run(), name="outbox")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Poll the due deliveries and deliver them, until cancelled."""
        retries = self.retries()
        slots = asyncio.Semaphore(retries.max_concurrency)
        async with (
            httpx.AsyncClient(
                timeout=retries.timeout, follow_redirects=False, trust_env=False
            ) as client,
            asyncio.TaskGroup() as group,
        ):
            while True:
                try:
                    due = await self.store.outbox.due(now_ms(), retries.max_concurrency)
                except Exception:
                    logger.exception("the outbox poll failed")
                    due = []
                for task_id in due:
                    if task_id not in self._busy:
                        self._busy.add(task_id)
                        group.create_task(self._task(client, slots, task_id), name="outbox-task")
                await asyncio.sleep(retries.poll_interval)

    async def _task(
        self, client: httpx.AsyncClient, slots: asyncio.Semaphore, task_id: str
    ) -> None:
        try:
            async with slots:
                await self.deliver(client, task_id)
        except Exception:  # one bad delivery must not end the sender's task group
            logger.exception("the deliveries of %s failed", task_id)
        finally:
            self._busy.discard(task_id)

    async def deliver(self, client: httpx.AsyncClient, task_id: str) -> None:
        """Make the due deliveries of one task (if it ended and no other replica holds it)."""
        retries = self.retries()
        outbox = self.store.outbox
        lease_ms = int((retries.timeout * 2 + 10) * 1000)
        claimed = await outbox.claim(task_id, self.owner, lease_ms)
        if claimed.state is Claim.RUNNING:
            await outbox.later(task_id, now_ms() + outbox.recheck_ms)
            # If it ended meanwhile, ``later`` may have undone the ender's "due now": see again.
            claimed = await outbox.claim(task_id, self.owner, lease_ms)
        if claimed.state is Claim.GONE:
            await outbox.forget(task_id)
        if claimed.state is not Claim.OK:
            return
        record = await self.store.get(task_id)
        now = now_ms()
        due = {
            name: state
            for name, state in claimed.records.items()
            if state.get("status") == "pending" and (state.get("nextAttemptAt") or 0) <= now
        }
        if record is not None and due:
            names = list(due)
            results = await asyncio.gather(
                *(self._attempt(client, record, n, due[n], retries) for n in names)
            )
            updates = dict(zip(names, results, strict=True))
        else:
            updates = {}
        states = {**claimed.records, **updates}
        pending = [
            s.get("nextAttemptAt") or now for s in states.values() if s.get("status") == "pending"
        ]
        next_at = min(pending) if pending and record is not None else None
        if not await outbox.settle(task_id, self.owner, updates, next_at):
            logger.warning("the outbox lease of %s lapsed during its deliveries", task_id)

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        record: TaskRecord,
        name: str,
        state: dict[str, Any],
        retries: Retries,
    ) -> dict[str, Any]:
        channel = self.channels.get(name.partition(":")[0])
        if channel is None:  # another replica's kind (a rolling upgrade): left to it
            return {**state, "nextAttemptAt": now_ms() + int(retries.max_backoff * 1000)}
        msg_id = channel.message_id(record.task_id, name)
        try:
            outcome = await channel.attempt(client, record, name, msg_id)
        except Exception as exc:
            logger.exception("delivery %s of %s crashed", name, record.task_id)
            outcome = Attempt(False, True, error=f"{type(exc).__name__}: {exc}"[:300])
        state = {**state, "webhookId": msg_id}
        if outcome is None:
            return {**state, "status": "dropped", "nextAttemptAt": None}
        at = now_ms()
        attempts = int(state.get("count", len(state.get("attempts", [])))) + 1
        history = [*state.get("attempts", []), {"at": at, "status": outcome.status}]
        history[-1]["error"] = outcome.error
        state.update(count=attempts, attempts=history[-HISTORY:], lastAttemptAt=at)
        if outcome.delivered:
            state.update(status="delivered", deliveredAt=at, nextAttemptAt=None)
        elif not outcome.retry or attempts >= retries.max_attempts:
            state.update(status="failed", nextAttemptAt=None)
        else:
            delay = next_delay(retries, attempts, outcome.retry_after)
            state["nextAttemptAt"] = at + int(delay * 1000)
        log = logger.info if outcome.delivered else logger.warning
        log("delivery %s of %s: attempt %d, %s", name, record.task_id, attempts, state["status"])
        return state
