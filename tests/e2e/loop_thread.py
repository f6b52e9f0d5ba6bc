"""A base for test servers that run their own asyncio event loop in a daemon thread.

The test's code stays synchronous (Playwright's sync API, the CLI in a subprocess) while the
server serves on ``127.0.0.1:<port>``. A subclass writes :meth:`LoopThreadServer._serve`:
start listening, set ``_ready``, wait on ``_stop``, then close what it opened. A ``with`` block
starts and stops it.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Self

from tests.helpers import free_port


class LoopThreadServer:
    """Owns the thread, the loop and the start/stop handshake of one test server."""

    def __init__(self) -> None:
        self.port = free_port()
        self._handlers: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the thread; returns once the server listens."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")

    def stop(self) -> None:
        """Ask ``_serve`` to finish and wait (bounded) for the thread to end."""
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _track_handler(self) -> None:
        """Remember the running connection handler, so ``_serve`` can wait for it on stop."""
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        await self._serve()

    async def _serve(self) -> None:
        raise NotImplementedError
