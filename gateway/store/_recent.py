"""The complete logs of tasks this process just finished, kept in memory for a while.

A finished task's readers tend to come back together (a page reload, a herd reconnecting after
a network blip, a replica that drained its streams): replaying from memory costs no Redis round
trip, and every reader shares the frames the live readers already had encoded.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from gateway.protocol import TaskRecord
from gateway.store._log import LocalLog

__all__ = ["RecentLogs"]


class RecentLogs:
    """At most ``max_tasks`` logs holding at most ``max_messages`` messages in all, each kept
    for the time it was remembered for (least recently finished go first)."""

    def __init__(self, max_tasks: int = 1000, max_messages: int = 200_000) -> None:
        self.max_tasks = max_tasks
        self.max_messages = max_messages
        self._items: OrderedDict[str, tuple[float, TaskRecord, LocalLog]] = OrderedDict()
        self._messages = 0

    def remember(self, record: TaskRecord, log: LocalLog, seconds: float) -> None:
        """Keep ``log``, the whole log (from seq 1) of the finished task ``record``."""
        if log.base != 0 or not record.terminal or seconds <= 0:
            return
        self.forget(record.task_id)
        self._items[record.task_id] = (time.monotonic() + seconds, record, log)
        self._messages += len(log.messages)
        while self._items and (
            len(self._items) > self.max_tasks or self._messages > self.max_messages
        ):
            self.forget(next(iter(self._items)))

    def get(self, task_id: str) -> tuple[TaskRecord, LocalLog] | None:
        item = self._items.get(task_id)
        if item is None:
            return None
        if item[0] < time.monotonic():
            self.forget(task_id)
            return None
        return item[1], item[2]

    def forget(self, task_id: str) -> None:
        item = self._items.pop(task_id, None)
        if item is not None:
            self._messages -= len(item[2].messages)

    def __len__(self) -> int:
        return len(self._items)
