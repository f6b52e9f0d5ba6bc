"""The bubblewrap command line of a sandbox run, and where the sandbox's interpreter lives.

What the sandbox sees (DESIGN §10): the system folders (``/usr`` and the ``/bin``, ``/lib*``
links or folders) and the interpreter's own folders, all read-only; a handful of harmless ``/etc``
files the dynamic linker and locale code read; its own ``/proc`` (its PID namespace only), a
minimal ``/dev``; and three writable places, each a tmpfs of at most ``disk_bytes``: ``/work``
(its working folder), ``/tmp`` and ``/dev/shm``. The root and ``/dev`` are then remounted
read-only, so nothing else can be written. It has its own user, PID, network (loopback only), IPC,
UTS and cgroup namespaces, no capability, a new session, and it dies with its parent.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SYSTEM_FOLDERS", "WORK", "interpreter_folders", "sandbox_argv", "supports"]

WORK = "/work"
SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = (
    "/etc/alternatives",
    "/etc/fonts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
)
_PROBE = (
    "import json, sys; "
    "print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]))"
)
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": WORK}


def interpreter_folders(python: str) -> tuple[str, ...]:
    """The folders ``python`` needs (its prefixes) that the system folders do not already hold.

    Raises :class:`OSError` (or ``subprocess.SubprocessError``) when ``python`` cannot run.
    """
    done = subprocess.run(
        [python, "-I", "-S", "-c", _PROBE],
        capture_output=True,
        env={},
        timeout=30,
        check=True,
    )
    prefixes = sorted({os.path.normpath(str(path)) for path in json.loads(done.stdout)})
    folders: list[str] = []
    for prefix in prefixes:
        if _inside(prefix, SYSTEM_FOLDERS) or _inside(prefix, folders):
            continue
        folders = [kept for kept in folders if not _inside(kept, (prefix,))] + [prefix]
    return tuple(folders)


def supports(bwrap: str, option: str) -> bool:
    """Does this bwrap know ``option`` (bubblewrap 0.8 added ``--disable-userns``)?"""
    try:
        done = subprocess.run([bwrap, "--help"], capture_output=True, env={}, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return option.encode() in done.stdout + done.stderr


def sandbox_argv(
    bwrap: str,
    binds: Sequence[tuple[str, str]],
    disk_bytes: int,
    command: Sequence[str],
    *,
    disable_userns: bool = True,
) -> list[str]:
    """The bwrap command running ``command`` with ``binds`` (``(host path, sandbox path)``).

    ``disable_userns`` (where bwrap supports it) also stops the code from making namespaces.
    """
    argv = [
        bwrap,
        "--unshare-user",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        *(["--disable-userns"] if disable_userns else []),
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--hostname",
        "sandbox",
    ]
    for folder in SYSTEM_FOLDERS:
        path = Path(folder)
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), folder]
        elif path.is_dir():
            argv += ["--ro-bind", folder, folder]
    for etc in _ETC:
        argv += ["--ro-bind-try", etc, etc]
    for source, target in binds:
        argv += ["--ro-bind", source, target]
    size = str(disk_bytes)
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", size, "--perms", "1777", "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    argv += ["--size", size, "--perms", "1777", "--tmpfs", "/tmp"]
    argv += ["--size", size, "--perms", "0700", "--tmpfs", WORK]
    argv += ["--remount-ro", "/", "--chdir", WORK]
    for name, value in ENV.items():
        argv += ["--setenv", name, value]
    return [*argv, "--", *command]


def _inside(path: str, folders: Sequence[str]) -> bool:
    return any(Path(path).is_relative_to(folder) for folder in folders)
