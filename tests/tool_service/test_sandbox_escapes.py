"""Escapes from the code sandbox are stopped, with the service run as root and as another user.

Each test runs attacker code through ``POST /v1/tool/code_interpreter`` of a tool service started
as its own process (``agent-gateway serve tool_service``), once as root (as in CI and the compose
file) and once as an unprivileged uid (as ``agent-gateway dev`` runs for a normal user). The
service's environment holds a fake ``LLM_API_KEY`` and ``SERVICE_TOKEN``. Network attempts
target 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from tests.helpers import free_port, running_process
from tests.tool_service.support import SUM_TABLE, TABLE_CSV, Service, sandbox_processes
from tool_service import Settings

ROOT = Path(__file__).resolve().parents[2]
AS_USER = Path(__file__).with_name("as_user.py")
# The folders of this interpreter that another uid may be unable to reach (pyenv under /root).
PRIVATE_FOLDERS = sorted(
    {sys.prefix, sys.base_prefix}
    - {folder for folder in (sys.prefix, sys.base_prefix) if folder.startswith("/usr/")}
)
UNPRIVILEGED_UID = 64_123  # no account of its own: nothing else on the host runs as it
SECRET = "sk-canary-9c1e55d0-service-secret"
TOKEN = "token-canary-41b7e2"
DISK_MB = 8


class Hosted(Service):
    """A tool service running as a process of its own, and the folder holding its files."""

    def __init__(self, url: str, settings: Settings, base: Path) -> None:
        super().__init__(url, settings)
        self.client.headers["Authorization"] = f"Bearer {TOKEN}"
        self.base = base
        self.port = int(urlsplit(url).port or 0)

    def final(self, code: str, request_id: str = "attacker", **extra: Any) -> dict[str, Any]:
        """Run ``code``; its last frame (the stream must end with ``[DONE]``)."""
        body = {"requestId": request_id, "code": code, **extra}
        events = self.stream("/v1/tool/code_interpreter", body)
        assert events[-1] == "[DONE]"
        last: dict[str, Any] = events[-2]
        return last

    def assert_healthy_and_clean(self) -> None:
        """The service answers, and no process or folder of a run is left."""
        assert self.client.get("/health").status_code == 200
        deadline = time.monotonic() + 5
        while sandbox_processes(self.settings.sandbox.root) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sandbox_processes(self.settings.sandbox.root) == []
        assert list(self.settings.sandbox.root.iterdir()) == []


@contextlib.contextmanager
def _host(uid: int | None) -> Iterator[Hosted]:
    """Start the tool service as root (``uid`` None) or as ``uid``; stop it and remove its files."""
    base = Path(tempfile.mkdtemp(prefix="tool-escape-"))
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(base),
        "LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "LLM_API_KEY": SECRET,
        "SERVICE_TOKEN": TOKEN,
        "FILE_ROOT": str(base / "files"),
        "SANDBOX_ROOT": str(base / "sandboxes"),
        "SANDBOX_UID_LOCK_DIR": str(base / "uids"),
        "CODE_TIMEOUT": "5",
        "CODE_MEMORY_MB": "256",
        "CODE_DISK_MB": str(DISK_MB),
        "MAX_FILE_BYTES": str(1024 * 1024),
    }
    argv = [sys.executable, "-m", "gateway.cli", "serve", "tool_service", "--port", str(port)]
    if uid is not None:
        os.chown(base, uid, uid)
        config = {
            "uid": uid,
            "expose": PRIVATE_FOLDERS,
            "argv": argv,
            "env": env,
        }
        argv = [sys.executable, str(AS_USER), json.dumps(config)]
    url = f"http://127.0.0.1:{port}"
    try:
        with running_process(argv, url + "/health", env={**env, "PYTHONPATH": str(ROOT)}):
            service = Hosted(url, Settings.from_env(env), base)
            try:
                yield service
            finally:
                service.client.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", params=["as-root", "as-user"])
def hosted(request: pytest.FixtureRequest) -> Iterator[Hosted]:
    """The tool service as root and as an unprivileged user (itself, when the tests are)."""
    running_as_root = os.geteuid() == 0
    if request.param == "as-root" and not running_as_root:
        pytest.skip("the service can run as root only when the tests do")
    uid = UNPRIVILEGED_UID if request.param == "as-user" and running_as_root else None
    with _host(uid) as service:
        yield service


def test_sandboxed_code_cannot_read_etc_shadow_or_list_root(hosted: Hosted) -> None:
    code = (
        "import json, os\n"
        "found = {}\n"
        "try:\n"
        "    found['shadow'] = open('/etc/shadow').read()\n"
        "except OSError as exc:\n"
        "    found['shadow'] = type(exc).__name__\n"
        "try:\n"
        "    found['root'] = sorted(os.listdir('/root'))\n"
        "except OSError as exc:\n"
        "    found['root'] = type(exc).__name__\n"
        "print(json.dumps(found))\n"
    )
    final = hosted.final(code)
    found = json.loads(final["codeOutput"])
    assert found["shadow"] in ("FileNotFoundError", "PermissionError")
    # At most the path to the interpreter (a pyenv under /root) is there, nothing else of /root.
    interpreter_tops = {
        Path(folder).parts[2]
        for folder in PRIVATE_FOLDERS
        if Path(folder).is_relative_to("/root") and len(Path(folder).parts) > 2
    }
    if isinstance(found["root"], list):
        assert set(found["root"]) <= interpreter_tops
    hosted.assert_healthy_and_clean()


def test_sandboxed_code_cannot_read_another_requests_uploaded_file(hosted: Hosted) -> None:
    hosted.upload("victim", "secret.txt", "victim-data-7f3a")
    victim = hosted.settings.file_root / "victim" / "secret.txt"
    code = (
        "import os\n"
        f"for path in [{str(victim)!r}, '../victim/secret.txt']:\n"
        "    try:\n"
        "        print(open(path).read())\n"
        "    except OSError as exc:\n"
        "        print(path, type(exc).__name__)\n"
        f"for top, _, names in os.walk({str(hosted.settings.file_root)!r}):\n"
        "    print(*['listed:' + name for name in names])\n"
    )
    final = hosted.final(code)
    assert "victim-data-7f3a" not in final["codeOutput"]
    assert "listed:secret.txt" not in final["codeOutput"]
    hosted.assert_healthy_and_clean()


def test_sandboxed_code_cannot_reach_the_host_folder_of_its_run_through_proc(
    hosted: Hosted,
) -> None:
    # The sandbox's first processes hold the run's host folder open (the written files go back
    # through it): a file created through their /proc/<pid>/fd would skip the disk bound.
    code = (
        "import os\n"
        "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    try:\n"
        "        fds = os.listdir(f'/proc/{pid}/fd')\n"
        "    except OSError as exc:\n"
        "        print(pid, type(exc).__name__)\n"
        "        continue\n"
        "    for fd in fds:\n"
        "        try:\n"
        "            os.close(os.open(f'/proc/{pid}/fd/{fd}/escaped', os.O_CREAT | os.O_WRONLY))\n"
        "            print('created through', pid, fd)\n"
        "        except OSError:\n"
        "            pass\n"
    )
    final = hosted.final(code)
    assert "created through" not in final["codeOutput"]
    assert final["fileInfo"] == []
    hosted.assert_healthy_and_clean()


def test_sandboxed_code_cannot_read_the_service_environment_through_proc(hosted: Hosted) -> None:
    code = (
        "import os\n"
        "print(dict(os.environ))\n"
        "for entry in os.listdir('/proc'):\n"
        "    if entry.isdigit():\n"
        "        try:\n"
        "            print(entry, open(f'/proc/{entry}/environ', 'rb').read())\n"
        "        except OSError as exc:\n"
        "            print(entry, type(exc).__name__)\n"
    )
    final = hosted.final(code)
    assert final["exitCode"] == 0
    assert SECRET not in final["codeOutput"]
    assert TOKEN not in final["codeOutput"]
    assert "LLM_API_KEY" not in final["codeOutput"]
    hosted.assert_healthy_and_clean()


def test_sandboxed_code_cannot_connect_to_redis_or_the_service_on_loopback(
    hosted: Hosted, redis_url: str
) -> None:
    key = "sandbox-escape-" + os.urandom(4).hex()
    redis_port = urlsplit(redis_url).port
    code = (
        "import socket\n"
        f"for port in ({redis_port}, {hosted.port}):\n"
        "    try:\n"
        "        with socket.create_connection(('127.0.0.1', port), timeout=2) as sock:\n"
        f"            sock.sendall(b'SET {key} 1\\r\\n')\n"
        "            print(port, 'connected', sock.recv(64))\n"
        "    except OSError as exc:\n"
        "        print(port, 'failed', type(exc).__name__)\n"
    )
    client = redis.Redis.from_url(redis_url)
    try:
        final = hosted.final(code)
        assert "connected" not in final["codeOutput"]
        assert final["codeOutput"].count("failed") == 2
        assert client.exists(key) == 0
    finally:
        client.delete(key)
        client.close()
    hosted.assert_healthy_and_clean()


def test_sandboxed_code_cannot_kill_the_service(hosted: Hosted) -> None:
    code = (
        "import os, signal\n"
        "print('parent', os.getppid(), flush=True)\n"
        "for target in (os.getppid(), 1, -1):\n"
        "    try:\n"
        "        os.kill(target, signal.SIGKILL)\n"
        "    except OSError as exc:\n"
        "        print(target, type(exc).__name__, flush=True)\n"
    )
    final = hosted.final(code)
    assert final["isFinal"] is True
    hosted.assert_healthy_and_clean()
    assert hosted.final("print('still here')")["codeOutput"] == "still here\n"


def test_a_detached_grandchild_does_not_outlive_the_run(hosted: Hosted) -> None:
    token = "stray-" + os.urandom(6).hex()
    marker = hosted.base / (token + ".marker")  # a host path the service's user may write
    script = f"sleep 1; echo escaped > inside.marker; echo escaped > {marker}"
    code = (
        "import os\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv('/bin/sh', ['sh', '-c', {script!r}, {token!r}])\n"
        "    os._exit(0)\n"
        "os.waitpid(child, 0)\n"
        "print('detached')\n"
    )
    final = hosted.final(code, request_id="detached")
    assert final["codeOutput"] == "detached\n"
    deadline = time.monotonic() + 2.5  # past the grandchild's sleep: it must never act
    while time.monotonic() < deadline:
        assert not marker.exists()
        assert not _processes_with(token)
        time.sleep(0.05)
    listed = hosted.client.post("/v1/file_tool/get_file_list", json={"requestId": "detached"})
    assert "inside.marker" not in listed.text
    assert [info["fileName"] for info in final["fileInfo"]] == []
    hosted.assert_healthy_and_clean()


def test_filling_the_disk_stops_at_the_bound_and_leaves_nothing(hosted: Hosted) -> None:
    token = "fill-" + os.urandom(6).hex()
    code = (
        "import json, os\n"
        "def fill(folder):\n"
        "    os.makedirs(folder, exist_ok=True)\n"
        "    written = 0\n"
        f"    for index in range({3 * DISK_MB}):  # up to three times the bound\n"
        "        try:\n"
        "            with open(os.path.join(folder, str(index)), 'wb', buffering=0) as out:\n"
        "                for _ in range(16):\n"
        "                    written += out.write(b'x' * 65536)\n"
        "        except OSError as exc:\n"
        "            return written, exc.errno\n"
        "    return written, None\n"
        f"print(json.dumps({{'tmp': fill('/tmp/{token}'), 'work': fill('fill')}}))\n"
    )
    try:
        final = hosted.final(code)
        found = json.loads(final["codeOutput"])
        for place in ("tmp", "work"):
            written, error = found[place]
            assert error == errno.ENOSPC, place
            assert written <= DISK_MB * 1024 * 1024, place
        assert final["fileInfo"] == []
        assert not Path("/tmp", token).exists()
        hosted.assert_healthy_and_clean()
        # /tmp is the run's own: the next run starts with it empty.
        after = hosted.final("import os\nprint(os.listdir('/tmp'))\n")
        assert token not in after["codeOutput"]
    finally:
        shutil.rmtree(Path("/tmp", token), ignore_errors=True)


def test_a_fork_bomb_is_contained_while_the_service_keeps_answering(hosted: Hosted) -> None:
    bomb = "import os\nwhile True:\n    os.fork()\n"
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(hosted.final, bomb)
        answered = 0
        while not running.done():
            assert hosted.client.get("/health", timeout=5).status_code == 200
            answered += 1
        final = running.result(timeout=30)
    assert answered >= 1
    assert final.get("error", {}).get("code") == "timeout" or final["exitCode"] != 0
    hosted.assert_healthy_and_clean()


def test_a_normal_run_prints_reads_its_input_and_returns_the_file_it_wrote(
    hosted: Hosted,
) -> None:
    hosted.upload("normal", "in.csv", TABLE_CSV)
    code = SUM_TABLE + "import os; print('uid', os.getuid())\n"
    final = hosted.final(code, request_id="normal", fileNames=["in.csv"])
    lines = final["codeOutput"].splitlines()
    assert lines[0] == "total 10"
    assert lines[1].startswith("uid ") and lines[1] != "uid 0"  # never root, as root or not
    assert final["exitCode"] == 0
    assert [info["fileName"] for info in final["fileInfo"]] == ["out.md"]
    download = hosted.client.get("/v1/file_tool/download/normal/out.md")
    assert download.text == "# Total\n10\n"
    hosted.assert_healthy_and_clean()


def _processes_with(token: str) -> list[int]:
    """Pids whose command line mentions ``token``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if token.encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found
