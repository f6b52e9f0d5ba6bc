"""The first process of a sandbox run: ``python -I -S -c <this file's source> <json config>``.

Inside bubblewrap it is pid 2 (bwrap's init is pid 1). It copies the request's input files (open
file descriptors the service passed down) into the run's working folder, starts the user's code
with the resource limits, waits for it, then SIGKILLs every other process of the run's PID
namespace (a detached grandchild included) so that the folder can no longer change, and copies the
files the code created or changed to the host folder it holds as a descriptor. That descriptor
never reaches the user's code (``close_fds``), and this process makes itself non-dumpable so that
the code cannot take it through ``/proc/<pid>/fd``. Last it writes ``.status.json`` (the code's
exit status) there.

With ``SANDBOX=unsafe-none`` (``contained`` false) it runs on the host: there it kills nothing
(``kill(-1)`` would hit the service's own processes) and the service's cleanup kills the group.

It imports only the standard library: it runs in the sandbox's interpreter with ``-S``.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from typing import Any

SETUP_FAILED = 126
STATUS_NAME = ".status.json"
SCRIPT_NAME = ".main.py"
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_CHUNK = 1024 * 1024
_QUIESCE_SECONDS = 2.0


def _copy(source_fd: int, target_fd: int) -> None:
    while True:
        chunk = os.read(source_fd, _CHUNK)
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            view = view[os.write(target_fd, view) :]


def _copy_inputs(work: str, inputs: dict[str, int], folder_fd: int) -> dict[str, tuple[int, int]]:
    """Copy each input descriptor (and the script) into ``work``; their ``(size, mtime_ns)``."""
    seen = {}
    sources = dict(inputs)
    sources[SCRIPT_NAME] = os.open(SCRIPT_NAME, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder_fd)
    for name, fd in sources.items():
        target = os.path.join(work, name)
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            _copy(fd, out)
        finally:
            os.close(out)
            os.close(fd)
        info = os.lstat(target)
        seen[name] = (info.st_size, info.st_mtime_ns)
    return seen


def _limit(limits: dict[str, list[int]]) -> Any:
    def apply() -> None:
        for name, (soft, hard) in limits.items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        ctypes.CDLL(None).prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)

    return apply


def _others() -> list[int]:
    """Live processes of this PID namespace other than its init (pid 1) and this one."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, os.getpid()):
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def _kill_the_rest() -> bool:
    """SIGKILL every other process of the namespace; True once none is left."""
    deadline = time.monotonic() + _QUIESCE_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)  # all but pid 1 and this process, atomically with fork
        except ProcessLookupError:
            pass
        if not _others():
            return True
        time.sleep(0.005)
    return False


def _export(work: str, folder_fd: int, inputs: dict[str, tuple[int, int]], most: int) -> None:
    """Copy new or changed top-level regular files (not dotfiles) of ``work`` to the folder."""
    exported = 0
    for name in sorted(os.listdir(work)):
        if exported >= most:
            return
        path = os.path.join(work, name)
        info = os.lstat(path)
        if name.startswith(".") or not stat.S_ISREG(info.st_mode):
            continue
        if inputs.get(name) == (info.st_size, info.st_mtime_ns):
            continue
        source = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            target = os.open(name, flags, 0o600, dir_fd=folder_fd)
            try:
                _copy(source, target)
            finally:
                os.close(target)
        finally:
            os.close(source)
        exported += 1


def _write_status(folder_fd: int, status: dict[str, object]) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    fd = os.open(STATUS_NAME, flags, 0o600, dir_fd=folder_fd)
    with os.fdopen(fd, "w") as handle:
        json.dump(status, handle)


def main(config: dict[str, Any]) -> int:
    """Run the configured code; return this process's exit code."""
    folder_fd = config["folder_fd"]
    work = config["work"]
    contained = config["contained"]
    os.umask(0o077)
    if contained and os.getpid() != 2:  # kill(-1) outside a PID namespace of its own would be fatal
        sys.stderr.write("[sandbox setup failed: the runner is not in a PID namespace]\n")
        return SETUP_FAILED
    if contained:
        ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    try:
        inputs = _copy_inputs(work, config["inputs"], folder_fd)
    except OSError as exc:
        message = f"cannot copy the input files: {exc.strerror}"
        sys.stderr.write(f"[sandbox setup failed: {message}]\n")
        _write_status(folder_fd, {"setup_error": message})
        return SETUP_FAILED
    child = subprocess.Popen(
        config["argv"],
        cwd=work,
        env=config["env"],
        stdin=subprocess.DEVNULL,
        preexec_fn=_limit(config["limits"]),
    )
    exit_code = child.wait()
    status: dict[str, object] = {"exit_code": exit_code}
    if not contained or _kill_the_rest():
        try:
            _export(work, folder_fd, inputs, config["max_files"])
        except OSError as exc:
            status["export_error"] = exc.strerror
    else:
        status["export_error"] = "processes of the run could not be stopped"
    _write_status(folder_fd, status)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
