"""Launches bubblewrap for a service run as root: ``python -I -S _sandbox_wrapper.py <json>``.

bubblewrap must not run as root here: its user namespace would map the sandbox to uid 0 of the
host, which the kernel exempts from ``RLIMIT_NPROC``. So this launcher drops to the run's own uid
and ``exec``s bwrap, which then builds an unprivileged user namespace like for any user.

One thing root does first: the sandbox's interpreter may live where that uid cannot look (pyenv
under a private ``/root``). In a mount namespace of its own, this launcher covers the top folder of
such a path (``/root``) with an empty tmpfs anyone may traverse, and bind-mounts just the
interpreter's folders back at their paths, read-only; bwrap then binds them into the sandbox as it
would for any user. The host's mounts are untouched, and the namespace ends with the run. No
capability survives the switch of uid.

It imports nothing from the tool service (it runs with ``-I -S`` in a fresh interpreter) and hands
bwrap an empty environment: bwrap's own processes are visible inside the sandbox.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import sys
from pathlib import Path

SETUP_FAILED = 126
_CLONE_NEWNS = 0x00020000
_MS_RDONLY = 0x1
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000
_MS_NOSUID = 0x2
_MS_NODEV = 0x4


def _mount(
    libc: ctypes.CDLL, source: str | None, target: str, flags: int, kind: str | None = None
) -> None:
    encoded = source.encode() if source is not None else None
    options = b"mode=0755" if kind == "tmpfs" else None
    fstype = kind.encode() if kind is not None else None
    if libc.mount(encoded, target.encode(), fstype, flags, options) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def _reachable(folder: str) -> bool:
    """Can any user list ``folder`` (and so reach it: every folder above searchable)?"""
    path = Path(folder)
    try:
        if path.stat().st_mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)
    except OSError:
        return False


def expose_folders(libc: ctypes.CDLL, folders: list[str]) -> None:
    """Make ``folders`` reachable by any user, in a mount namespace of this process only."""
    hidden = [folder for folder in folders if not _reachable(folder)]
    if not hidden:
        return
    if libc.unshare(_CLONE_NEWNS) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "unshare(CLONE_NEWNS): " + os.strerror(errno))
    _mount(libc, None, "/", _MS_REC | _MS_PRIVATE)  # nothing below propagates to the host
    # Opened in the new namespace, before anything is covered: the bind sources.
    sources = {folder: os.open(folder, os.O_PATH | os.O_DIRECTORY) for folder in hidden}
    for top in sorted({"/" + Path(folder).parts[1] for folder in hidden}):
        _mount(libc, "tmpfs", top, _MS_NOSUID | _MS_NODEV, "tmpfs")
    os.umask(0o022)
    for folder, fd in sources.items():
        os.makedirs(folder, mode=0o755, exist_ok=True)
        _mount(libc, f"/proc/self/fd/{fd}", folder, _MS_BIND | _MS_REC)
        _mount(libc, None, folder, _MS_BIND | _MS_REMOUNT | _MS_RDONLY)
        os.close(fd)


def main() -> None:
    """Expose the hidden folders, drop to the run's uid, ``exec`` bwrap."""
    config = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    expose_folders(libc, config["expose"])
    uid = config["uid"]
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    argv = config["argv"]
    os.execve(argv[0], argv, {})


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:
        sys.stderr.write("[sandbox setup failed: " + repr(exc) + "]\n")
        sys.stderr.flush()
        os._exit(SETUP_FAILED)
