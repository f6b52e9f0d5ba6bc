"""Several gateway processes on one port: ``agent-gateway serve gateway --workers N``.

The parent binds N listening sockets to the one port with ``SO_REUSEPORT`` and spawns N workers
(fresh interpreters: nothing of the parent's state is inherited), each of which builds the
gateway and accepts connections on its socket. The kernel spreads new connections over the
sockets by a hash of their addresses, so streams are shared evenly: with one socket shared by
all, a burst of connections went to whichever worker woke first (8 streams of 8 on one worker).
The parent keeps the sockets open: a worker that is started again takes its socket over, and
the connections that came meanwhile wait in its backlog instead of being reset. They share the Redis
store, so any worker serves any task's stream (a reader tails the task's log in Redis, whichever
worker runs the task) and each is a replica of its own (its own leases, its own consumer of the
queue). The memory store lives in one process: ``serve`` refuses ``--workers`` above 1 with it.

Stopping: SIGTERM or SIGINT to the parent is passed on to every worker as SIGTERM, and each stops
as a single gateway does (:mod:`gateway.server`): its open streams end cleanly (clients resume
on any replica with ``Last-Event-ID``), running tasks get ``SHUTDOWN_GRACE`` seconds and are then
handed over to the queue. The parent waits for all of them, then exits 0. A worker that dies is
started again (its tasks' leases lapse and the sweeper deals with them); one that fails to start
(uvicorn's exit status 3: a failing lifespan; or an exception out of the worker, such as a
setting the app refuses) stops them all, and the parent exits 1. A worker
whose parent is gone (SIGKILL) stops itself the same way: no orphans.

Why not ``uvicorn.run(..., workers=N)``: its workers run uvicorn's own ``Server``, which has no
place for the drain (an open SSE stream would hold the shutdown for all of
``timeout_graceful_shutdown`` and then be cut), and it sends its ``Config`` to the workers by
pickle, which the header-timeout protocol class (made per ``HEADER_TIMEOUT``) cannot take. Here
each worker builds its own config and runs :class:`gateway.server.DrainingServer` on its socket
through uvicorn's public ``Server.run(sockets=...)``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

__all__ = ["STARTUP_FAILURE", "Worker", "bind_sockets", "run_workers"]

logger = logging.getLogger("gateway.workers")

STARTUP_FAILURE = 3
"""The exit status of a uvicorn server whose startup failed (``uvicorn.config.STARTUP_FAILURE``)."""

STOP_TIMEOUT = 60.0
"""Seconds the parent waits for a stopping worker before it kills it (the drain, the tasks'
grace and their handover take ``SHUTDOWN_GRACE`` + a few seconds)."""

PARENT_CHECK_INTERVAL = 1.0
"""Seconds between a worker's checks that its parent is still alive."""

Worker = Callable[[socket.socket], None]
"""Serves on the listening socket it is given until a stop signal; a module-level function or a
``functools.partial`` of one (it is pickled to the spawned process)."""


def bind_sockets(host: str, port: int, count: int, backlog: int = 2048) -> list[socket.socket]:
    """``count`` sockets listening on ``host:port`` with ``SO_REUSEPORT``, one per worker (port
    0: the first one's port for all)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_server(
                (host.strip("[]"), port), family=family, backlog=backlog, reuse_port=True
            )
            sockets.append(sock)
            port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _watch_parent(parent: int) -> None:
    """Stop this worker (as SIGTERM does) once its parent has gone."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_INTERVAL)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(worker: Worker, sock: socket.socket, parent: int) -> None:
    """Run ``worker``; an exception out of it (an app that cannot be built) ends the process as
    a failed start, so that the parent stops instead of starting it again and again."""
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
    try:
        worker(sock)
    except Exception:
        logger.exception("the worker failed")
        raise SystemExit(STARTUP_FAILURE) from None


class _Supervisor:
    """Starts the workers, restarts one that dies, and stops them all on a signal."""

    def __init__(self, worker: Worker, sockets: list[socket.socket]) -> None:
        self.worker = worker
        self.sockets = sockets
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[BaseProcess] = []
        self.signals: list[int] = []
        self.wake = threading.Event()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)
        self.wake.set()

    def _spawn(self, index: int) -> BaseProcess:
        process = self.context.Process(
            target=_worker_main,
            args=(self.worker, self.sockets[index], os.getpid()),
            name=f"gateway-worker-{index}",
        )
        process.start()
        logger.info("started worker %d [%s]", index, process.pid)
        return process

    def _replace_dead(self) -> bool:
        """Start again every worker that died; False when one failed to start."""
        for index, process in enumerate(self.processes):
            if process.is_alive():
                continue
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logger.error("worker %d [%s] failed to start: stopping", index, process.pid)
                return False
            logger.warning(
                "worker %d [%s] died (exit %s): starting it again",
                index,
                process.pid,
                process.exitcode,
            )
            self.processes[index] = self._spawn(index)
        return True

    def _stop_all(self, sig: int) -> None:
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, sig)

    def run(self) -> int:
        handled = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            self.processes = [self._spawn(index) for index in range(len(self.sockets))]
            failed = False
            while not self.signals and not failed:
                self.wake.wait(0.5)
                failed = not self.signals and not self._replace_dead()
            self._stop_all(signal.SIGTERM)
            self._join_all()
            return 1 if failed else 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _join_all(self) -> None:
        """Wait for every worker; a further signal to the parent is passed on (a second SIGINT
        makes uvicorn stop at once); one still alive after ``STOP_TIMEOUT`` is killed."""
        seen = len(self.signals)
        for process in self.processes:
            remaining = STOP_TIMEOUT
            while process.is_alive() and remaining > 0:
                process.join(0.2)
                remaining -= 0.2
                if len(self.signals) > seen:
                    self._stop_all(self.signals[-1])
                    seen = len(self.signals)
            if process.is_alive():
                logger.error("worker [%s] did not stop in %gs: killed", process.pid, STOP_TIMEOUT)
                process.kill()
                process.join()


def run_workers(worker: Worker, sockets: list[socket.socket]) -> int:
    """Run a process of ``worker`` on each of ``sockets`` (:func:`bind_sockets`) until SIGTERM
    or SIGINT; returns the exit status (0 stopped, 1 a worker failed to start)."""
    if not sockets:
        raise ValueError("at least one worker")
    return _Supervisor(worker, sockets).run()
