"""Allocation of the sandbox uids, safe across every tool service on the host.

When the service runs as root, each sandbox run gets a uid of its own, as which bubblewrap runs:
the sandbox is then never root of the host (root is exempt from ``RLIMIT_NPROC``), and the
cleanup can kill by uid. Several service processes may
share a host (replicas, test runs), so a uid is held through an ``flock`` on a lock file in a
shared folder: the kernel releases it if the holder dies. A uid that still owns any process, even
a zombie (zombies count against ``RLIMIT_NPROC``), is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from ._reaper import live_processes
from .errors import SandboxError

__all__ = ["UidLease", "UidPool"]


@dataclass(frozen=True)
class UidLease:
    """A uid held by one run until :meth:`release`."""

    uid: int
    fd: int

    def release(self) -> None:
        """Give the uid back (closing the lock file drops the lock)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


class UidPool:
    """Hands out uids from ``[base, base + count)``, round-robin, one run at a time each."""

    def __init__(self, base: int, count: int, lock_dir: Path) -> None:
        self.base = base
        self.count = count
        self.lock_dir = lock_dir
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Start at a per-process offset so that concurrent services rarely probe the same uids.
        self._next = os.getpid() % count

    def acquire(self) -> UidLease:
        """Lock a free uid, or raise :class:`SandboxError` when all are busy."""
        for _ in range(self.count):
            uid = self.base + self._next
            self._next = (self._next + 1) % self.count
            fd = os.open(self.lock_dir / str(uid), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if live_processes(None, uid, include_zombies=True):
                os.close(fd)
                continue
            return UidLease(uid, fd)
        raise SandboxError("too many code runs at once: no free sandbox uid")
