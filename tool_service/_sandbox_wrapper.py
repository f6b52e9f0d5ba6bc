"""Sandbox launcher, run as ``python -I -S _sandbox_wrapper.py <json>`` in the sandbox's session.

It applies the resource limits, drops root to the sandbox's own uid when the service runs as root
(so that ``RLIMIT_NPROC`` counts only the sandbox's processes and the service's ``/proc`` entries
are out of reach), forbids regaining privileges, then ``exec``s the user's interpreter. It imports
nothing from the tool service: it runs in a fresh interpreter with a scrubbed environment.

When the interpreter lives where the sandbox uid cannot read (pyenv under a private ``/root``),
the uid keeps ``CAP_DAC_READ_SEARCH`` as an ambient capability: read-only access to files, nothing
more (no writes outside its folder, no signals to other users, no ``/proc/<pid>/environ``).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys

SETUP_FAILED = 126
_PR_SET_KEEPCAPS = 8
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_CAP_DAC_READ_SEARCH = 2
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, what + ": " + os.strerror(errno))


def _drop_root(libc: ctypes.CDLL, uid: int, keep_read_access: bool) -> None:
    if keep_read_access:
        _check(libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if keep_read_access:
        mask = 1 << _CAP_DAC_READ_SEARCH
        data = (_CapData * 2)()
        data[0].effective = data[0].permitted = data[0].inheritable = mask
        header = _CapHeader(_CAPABILITY_VERSION_3, 0)
        _check(libc.capset(ctypes.byref(header), data), "capset")
        _check(
            libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _CAP_DAC_READ_SEARCH, 0, 0),
            "prctl(PR_CAP_AMBIENT_RAISE)",
        )


def main() -> None:
    config = json.loads(sys.argv[1])
    os.umask(0o077)
    for name, (soft, hard) in config["limits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    libc = ctypes.CDLL(None, use_errno=True)
    if config["uid"] is not None:
        _drop_root(libc, config["uid"], config["keep_read_access"])
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    argv = config["argv"]
    os.execv(argv[0], argv)


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:
        sys.stderr.write("[sandbox setup failed: " + repr(exc) + "]\n")
        sys.stderr.flush()
        os._exit(SETUP_FAILED)
