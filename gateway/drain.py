"""The drain signal: set once on a stop signal, it ends every open SSE stream cleanly."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Drain"]


class Drain:
    """Streams subscribe a callback instead of parking a task each: draining costs an idle
    connection nothing until it happens."""

    __slots__ = ("_callbacks", "_set")

    def __init__(self) -> None:
        self._set = False
        self._callbacks: set[Callable[[], None]] = set()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Start draining: call every subscriber once (later subscribers are called at once)."""
        if self._set:
            return
        self._set = True
        callbacks, self._callbacks = self._callbacks, set()
        for callback in callbacks:
            callback()

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when draining starts (at once if it has started)."""
        if self._set:
            callback()
        else:
            self._callbacks.add(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        """Forget ``callback`` (an equal one will do: bound methods are made afresh each time).

        No closure is kept per subscriber: with ten thousand idle streams they added up.
        """
        self._callbacks.discard(callback)
