"""Child processes of a bench run (Redis, the upstream, the gateway, the naive relay), the CPUs
they may run on (``--pin``), and their CPU and memory, read from ``/proc``."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_fd_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (a gateway's workers), from ``/proc``."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            with open(f"/proc/{current}/task/{current}/children") as f:
                queue.extend(int(child) for child in f.read().split())
    return found


def pin(pid: int, cpus: Collection[int]) -> None:
    """Let every thread of ``pid`` run on ``cpus`` only (``taskset -a -p``); threads and
    processes started later inherit it from their parent thread."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(thread), cpus)


def pinned(cpus: Collection[int] | None) -> Callable[[], None]:
    """A ``preexec_fn`` that raises the fd limit and, with ``cpus``, pins the child to them."""

    def prepare() -> None:
        raise_fd_limit()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return prepare


def parse_cpus(text: str) -> set[int]:
    """``"1"``, ``"0,2"``, ``"2-3"`` → a set of CPU numbers this process may use."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    unknown = cpus - os.sched_getaffinity(0)
    if not cpus or unknown:
        raise ValueError(
            f"CPUs {sorted(unknown) or text!r} are not among {sorted(os.sched_getaffinity(0))}"
        )
    return cpus


def cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by process ``pid``: the scheduler's nanosecond count summed over
    its threads where the kernel keeps it (``schedstat``), else user + system time from ``stat``
    (10 ms resolution: at one stream a run uses a few tenths of a second)."""
    try:
        total = 0
        for thread in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{thread}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def self_cpu_seconds() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    """Wait until something accepts connections on ``port`` (or fail if ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"child exited with {proc.returncode} before port {port} opened"
                ) from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port} after {timeout}s") from None
            time.sleep(0.05)


@dataclass
class Child:
    """A started child process listening on ``port``."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        """CPU seconds of the process and the processes below it (a gateway's workers)."""
        total = 0.0
        for pid in descendants(self.proc.pid):
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def rss(self) -> int:
        total = 0
        for pid in descendants(self.proc.pid):
            with contextlib.suppress(OSError):
                total += rss_bytes(pid)
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_python(
    name: str,
    module: str,
    args: list[str],
    env: Mapping[str, str] | None = None,
    cpus: Collection[int] | None = None,
) -> Child:
    """Start ``python -m module --port <free> args…`` (does not wait for it), on ``cpus``."""
    port = free_port()
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port), *args],
        env=full_env,
        preexec_fn=pinned(cpus) if cpus else None,
    )
    return Child(name, proc, port)


@contextlib.contextmanager
def redis_server(cpus: Collection[int] | None = None) -> Iterator[tuple[str, Child | None]]:
    """``REDIS_URL`` if set, else a private ``redis-server`` on a free port (on ``cpus``);
    yields its URL."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url, None
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed and REDIS_URL is not set")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="agw-bench-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--maxclients",
            "20000",
        ],
        stdout=subprocess.DEVNULL,
        preexec_fn=pinned(cpus),
    )
    child = Child("redis", proc, port)
    try:
        wait_port(port, proc)
        yield f"redis://127.0.0.1:{port}/0", child
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
