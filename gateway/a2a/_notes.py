"""Small per-task side records of the A2A binding, kept by the store beside each task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.applications import Starlette

from gateway.store import StreamStore, TaskExtras

__all__ = ["TaskNotes", "task_notes"]


class TaskNotes:
    """Small string records per task and kind (an A2A task's context and first message, its
    push configs), kept by the store beside the task (so they expire with it and follow it
    across replicas)."""

    def __init__(self, store: StreamStore, ttl: float) -> None:
        self.ttl = max(1, int(ttl))
        self._store = store

    def extras(
        self, notes: Mapping[str, Mapping[str, str]], deliveries: Sequence[str] = ()
    ) -> TaskExtras:
        """``notes`` (by kind) and outbox ``deliveries`` to write with a new task, in the
        store's ``create`` (with this expiry, as :meth:`set` writes them)."""
        return TaskExtras(notes=notes, note_ttl=self.ttl, deliveries=deliveries)

    async def set(self, task_id: str, kind: str, fields: Mapping[str, str]) -> None:
        """Merge ``fields`` into the record and restart its expiry."""
        await self._store.annotate(task_id, kind, fields, self.ttl)

    async def get(self, task_id: str, kind: str) -> dict[str, str]:
        """The record (empty when there is none)."""
        return (await self.get_many([task_id], kind))[0]

    async def get_many(self, task_ids: Sequence[str], kind: str) -> list[dict[str, str]]:
        """The records of ``task_ids``, in order."""
        return await self._store.annotations(task_ids, kind)


def task_notes(app: Starlette) -> TaskNotes:
    """The app's :class:`TaskNotes` (made on first use, over ``app.state.store``)."""
    notes: TaskNotes | None = getattr(app.state, "task_notes", None)
    if notes is None:
        settings = getattr(app.state, "settings", None)
        ttl = 86_400 * 2.0
        if settings is not None:
            ttl = settings.result_ttl + settings.task_timeout + 3600
        notes = app.state.task_notes = TaskNotes(app.state.store, ttl)
    return notes
