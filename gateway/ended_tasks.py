"""Tasks watched until they end, for deliveries made at a task's end (webhooks, A2A push).

Polled, not pushed: a watch list per replica, read every ``poll_interval`` or when a task is
added; the durable outbox of DESIGN §7 is to replace it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from gateway.protocol import TaskRecord
from gateway.store import StreamStore

__all__ = ["EndedTasks"]

logger = logging.getLogger(__name__)

Deliver = Callable[[httpx.AsyncClient, TaskRecord], Coroutine[Any, Any, None]]


class EndedTasks:
    """A set of watched tasks, polled for their end: :meth:`deliver_ended` hands each task
    that became terminal to ``deliver`` (once) and forgets tasks that expired."""

    def __init__(self, store: StreamStore) -> None:
        self.store = store
        self._watched: set[str] = set()
        self._wake = asyncio.Event()

    def watch(self, task_id: str) -> None:
        """Hand ``task_id`` to the delivery once it is terminal."""
        self._watched.add(task_id)
        self._wake.set()

    async def deliver_ended(
        self,
        deliver: Deliver,
        *,
        timeout: float,
        poll_interval: float,
        label: str,
    ) -> None:
        """Poll the watched tasks and start ``deliver`` for each one that ended, until
        cancelled; every delivery belongs to this call's task group."""
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            asyncio.TaskGroup() as group,
        ):
            while True:
                if not self._watched:
                    await self._wake.wait()
                self._wake.clear()
                try:
                    ended = await self._ended()
                except Exception:
                    logger.exception("%s poll failed", label)
                    ended = []
                for record in ended:
                    group.create_task(deliver(client, record), name=f"{label}-delivery")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll_interval):
                        await self._wake.wait()

    async def _ended(self) -> list[TaskRecord]:
        watched = list(self._watched)
        if not watched:
            return []
        records = {r.task_id: r for r in await self.store.get_many(watched)}
        ended = []
        for task_id in watched:
            record = records.get(task_id)
            if record is None or record.terminal:
                self._watched.discard(task_id)  # expired, or ended: deliver it
            if record is not None and record.terminal:
                ended.append(record)
        return ended
