"""Find and kill every process a sandbox run left behind.

A run is identified by its process group (``start_new_session=True`` makes the launched bwrap a
group leader), by the init of its PID namespace (the child of that bwrap: once it is dead, the
kernel has killed every process of the namespace, a ``setsid()`` escapee included) and, when the
service runs as root, by its own uid. Zombies are ignored: they hold no resources but a pid, and
their parent (or init) reaps them.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal

import anyio

__all__ = ["kill_all", "live_processes", "open_children"]


def _describe(pid: int) -> tuple[str, int, int, int] | None:
    """``(state, process group, real uid, parent)`` of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("ascii", "replace")
        with open(f"/proc/{pid}/status", "rb") as handle:
            status = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    uid = -1
    for line in status.splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[1])
            break
    return fields[0], int(fields[2]), uid, int(fields[1])


def open_children(pid: int) -> list[int]:
    """Pidfds of the live children of ``pid`` (a pidfd names a process, never a reused pid)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        described = _describe(int(entry))
        if described is None or described[0] in ("Z", "X") or described[3] != pid:
            continue
        with contextlib.suppress(OSError):
            fd = os.pidfd_open(int(entry))
            if (_describe(int(entry)) or ("", 0, 0, 0))[3] == pid:
                found.append(fd)  # still that child: the pid was not reused in between
            else:
                os.close(fd)
    return found


def live_processes(
    pgid: int | None, uid: int | None, *, include_zombies: bool = False
) -> list[int]:
    """Pids in process group ``pgid`` or owned by ``uid`` (either may be None).

    Zombies are left out unless ``include_zombies``.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        described = _describe(int(entry))
        if described is None:
            continue
        state, group, owner, _ = described
        if state in ("Z", "X") and not include_zombies:
            continue
        if (pgid is not None and group == pgid) or (uid is not None and owner == uid):
            found.append(int(entry))
    return found


async def kill_all(
    pgid: int | None, uid: int | None, timeout: float, pidfds: tuple[int, ...] = ()
) -> bool:
    """SIGKILL the group, the uid's processes and the ``pidfds``' until none is left.

    False if some survived the ``timeout``. The pidfds are not closed.
    """
    with anyio.move_on_after(timeout):
        while True:
            if pgid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
            for fd in pidfds:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            pids = live_processes(pgid, uid)
            if not pids and not _running(pidfds):
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            # Dying processes need a moment to leave /proc; this is a bounded poll, not a wait.
            await anyio.sleep(0.005)
    return not live_processes(pgid, uid) and not _running(pidfds)


def _running(pidfds: tuple[int, ...]) -> bool:
    """Has any of ``pidfds`` not exited yet (a pidfd turns readable when its process exits)?"""
    if not pidfds:
        return False
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    return len(poller.poll(0)) < len(pidfds)
