"""Find and kill every process a sandbox run left behind.

A run is identified by its process group (``start_new_session=True`` makes the sandbox a group
leader) and, when the service runs as root, by its own uid, which also catches a process that
escaped the group with ``setsid()``. Zombies are ignored: they hold no resources but a pid, and
their parent (or init) reaps them.
"""

from __future__ import annotations

import contextlib
import os
import signal

import anyio

__all__ = ["kill_all", "live_processes"]


def _describe(pid: int) -> tuple[str, int, int] | None:
    """``(state, process group, real uid)`` of ``pid``, or None if it is gone."""
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
    return fields[0], int(fields[2]), uid


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
        state, group, owner = described
        if state in ("Z", "X") and not include_zombies:
            continue
        if (pgid is not None and group == pgid) or (uid is not None and owner == uid):
            found.append(int(entry))
    return found


async def kill_all(pgid: int | None, uid: int | None, timeout: float) -> bool:
    """SIGKILL the group and the uid's processes until none is left; False if some survived."""
    with anyio.move_on_after(timeout):
        while True:
            if pgid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
            pids = live_processes(pgid, uid)
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            # Dying processes need a moment to leave /proc; this is a bounded poll, not a wait.
            await anyio.sleep(0.005)
    return not live_processes(pgid, uid)
