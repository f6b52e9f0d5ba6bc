"""Run a command as another uid, with the interpreter's folders reachable (test harness only).

``python as_user.py <json>``, run as root, with ``{"uid", "expose", "argv", "env"}``. A pyenv
under a private ``/root`` cannot be read by another uid, so, in a mount namespace of this process
only, the top folder of each path in ``expose`` is covered by a tmpfs anyone may traverse and the
folder itself bound back at its path. Then it becomes ``uid`` (no supplementary group, no
capability) and ``exec``s ``argv`` with exactly ``env``. It imports nothing from the code under
test.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

_CLONE_NEWNS = 0x00020000
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000


def _mount(
    libc: ctypes.CDLL, source: bytes | None, target: str, kind: bytes | None, flags: int
) -> None:
    options = b"mode=0755" if kind == b"tmpfs" else None
    if libc.mount(source, target.encode(), kind, flags, options) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def expose(folders: list[str]) -> None:
    """Make ``folders`` reachable by any uid, in a mount namespace of this process."""
    if not folders:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    sources = {folder: os.open(folder, os.O_PATH | os.O_DIRECTORY) for folder in folders}
    for top in sorted({"/" + Path(folder).parts[1] for folder in folders}):
        _mount(libc, b"tmpfs", top, b"tmpfs", 0)
    os.umask(0o022)
    for folder, fd in sources.items():
        os.makedirs(folder, exist_ok=True)
        _mount(libc, f"/proc/self/fd/{fd}".encode(), folder, None, _MS_BIND | _MS_REC)


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    expose(config["expose"])
    uid = config["uid"]
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    os.execve(config["argv"][0], config["argv"], config["env"])
