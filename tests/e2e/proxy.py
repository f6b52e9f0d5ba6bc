"""A TCP proxy for tests that can sever its connections: a network drop on demand.

It runs its own event loop in a thread. ``cut()`` aborts every open connection (both sides get
a reset, as when a network path dies); ``cut_once_after=marker`` aborts the first connection whose
response contains ``marker``, right after the marker's last byte — deterministic mid-frame drops.
"""

from __future__ import annotations

import asyncio

from tests.e2e.loop_thread import LoopThreadServer


class CuttableProxy(LoopThreadServer):
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``."""

    def __init__(self, target_port: int, cut_once_after: bytes | None = None) -> None:
        super().__init__()
        self.target_port = target_port
        self.marker = cut_once_after
        self.cuts = 0
        self.connections = 0
        self._open: set[asyncio.StreamWriter] = set()

    def cut(self) -> int:
        """Abort every open connection now; returns how many were cut."""
        future = asyncio.run_coroutine_threadsafe(self._cut_all(), self._loop)
        return future.result(5)

    async def _cut_all(self) -> int:
        count = self._abort_all()
        self.cuts += count
        return count

    def _abort_all(self) -> int:
        writers = list(self._open)
        for writer in writers:
            writer.transport.abort()
        return len(writers) // 2  # each connection holds a client and a server side

    async def _serve(self) -> None:
        assert self._stop is not None
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            self._abort_all()
            if self._handlers:
                await asyncio.wait(self._handlers, timeout=5)
            await server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._track_handler()
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        pair = (client_w, server_w)
        self._open.update(pair)
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w, pair, watch=False),
                self._pipe(server_r, client_w, pair, watch=True),
            )
        finally:
            self._open.difference_update(pair)
            for writer in pair:
                writer.transport.abort()

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        watch: bool,
    ) -> None:
        tail = b""
        try:
            while data := await src.read(65536):
                marker = self.marker if watch else None
                if marker is not None:
                    window = tail + data
                    found = window.find(marker)
                    if found >= 0:
                        self.marker = None  # only the first matching connection is cut
                        dst.write(data[: found + len(marker) - len(tail)])
                        await dst.drain()
                        self.cuts += 1
                        for writer in pair:
                            writer.transport.abort()
                        return
                    tail = window[-len(marker) :]
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except (ConnectionError, OSError):
            for writer in pair:
                writer.transport.abort()


def cuttable_proxy(target_port: int, cut_once_after: bytes | None = None) -> CuttableProxy:
    """A :class:`CuttableProxy`, running for the ``with`` block it is used in."""
    return CuttableProxy(target_port, cut_once_after)
