"""The sandbox's limits hold and the service stays healthy, with no process left behind."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.tool_service.support import Service, ServiceFactory, sandbox_processes
from tool_service import Settings

FORK_BOMB = "import os\nwhile True:\n    os.fork()\n"
STUBBORN_FORK_BOMB = (
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
)
MEMORY_BOMB = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n"
HUGE_FILE = "with open('huge.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * 65536)\n"


def _run(service: Service, code: str) -> list:
    return service.stream("/v1/tool/code_interpreter", {"requestId": "limits", "code": code})


def _assert_healthy_and_clean(service: Service) -> None:
    assert service.client.get("/health").status_code == 200
    assert sandbox_processes(service.settings.sandbox.root) == []
    assert list(service.settings.sandbox.root.iterdir()) == []  # workspaces are removed


@pytest.mark.parametrize("code", [FORK_BOMB, STUBBORN_FORK_BOMB], ids=["plain", "stubborn"])
def test_a_fork_bomb_is_stopped_and_the_service_stays_healthy(service: Service, code: str) -> None:
    events = _run(service, code)
    assert events[-1] == "[DONE]"
    final = events[-2]
    assert final["isFinal"] is True
    if "error" in final:  # the stubborn bomb runs until the wall-clock limit
        assert final["error"]["code"] == "timeout"
    else:
        assert final["exitCode"] != 0
        assert "Resource temporarily unavailable" in final["codeOutput"]
    _assert_healthy_and_clean(service)


def test_a_memory_bomb_hits_the_address_space_limit(service: Service) -> None:
    final = _run(service, MEMORY_BOMB)[-2]
    assert final["exitCode"] != 0
    assert "MemoryError" in final["codeOutput"]
    _assert_healthy_and_clean(service)


def test_a_huge_file_write_hits_the_file_size_limit(make_service: ServiceFactory) -> None:
    # Stopped by the 1 MiB file limit, not by time: a loaded machine (a parallel test run)
    # may take more than the default test timeout of 2 s just to start the sandbox.
    with make_service(CODE_TIMEOUT="15") as service:
        final = _run(service, HUGE_FILE)[-2]
        assert final["exitCode"] != 0
        assert "File too large" in final["codeOutput"]
        sizes = [info["fileSize"] for info in final["fileInfo"]]
        assert all(size <= service.settings.max_file_bytes for size in sizes)
        _assert_healthy_and_clean(service)


def test_sandboxed_code_cannot_see_a_secret_of_the_service(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOL_SERVICE_TEST_SECRET", "hunter2-secret-value")
    code = (
        "import os\n"
        "print(sorted(os.environ))\n"
        "print(dict(os.environ))\n"
        "try:\n"
        "    print(open(f'/proc/{os.getppid()}/environ', 'rb').read())\n"
        "except OSError as exc:\n"
        "    print('parent environ refused:', exc.errno)\n"
    )
    final = _run(service, code)[-2]
    output = final["codeOutput"]
    assert "['HOME', 'LANG', 'PATH']" in output
    assert "hunter2-secret-value" not in output
    assert "sk-test-key" not in output  # the LLM key is not passed down either


def test_captured_output_is_capped(make_service: ServiceFactory) -> None:
    with make_service(CODE_MAX_OUTPUT_BYTES="1000") as service:
        events = _run(service, "for _ in range(10000):\n    print('x' * 99)\n")
        final = events[-2]
        assert final["exitCode"] == 0
        assert final["codeOutput"].startswith("x" * 99 + "\n")
        assert "[output truncated after 1000 bytes]" in final["codeOutput"]
        assert len(final["codeOutput"]) < 1100


def test_concurrent_runs_are_isolated_from_each_other(service: Service) -> None:
    code = (
        "import os, time\n"
        "open(os.urandom(4).hex(), 'w').close()\n"
        "time.sleep(0.5)\n"
        "print(os.getuid(), len([n for n in os.listdir('.') if not n.startswith('.')]))\n"
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_run, service, code) for _ in range(2)]
        finals = [future.result(timeout=20)[-2] for future in futures]
    outputs = [final["codeOutput"].split() for final in finals]
    assert all(final["exitCode"] == 0 for final in finals)
    assert outputs[0][1] == outputs[1][1] == "1"  # each run sees only the file it wrote
    if os.geteuid() == 0:
        assert outputs[0][0] != outputs[1][0]  # and, as root, separate uids
    _assert_healthy_and_clean(service)


def test_without_bubblewrap_code_execution_is_refused_with_503(
    make_service: ServiceFactory,
) -> None:
    with make_service(SANDBOX_BWRAP="/nonexistent/bwrap") as service:
        for stream in (True, False):
            body = {"requestId": "refused", "code": "print('ran')", "stream": stream}
            response = service.client.post("/v1/tool/code_interpreter", json=body)
            assert response.status_code == 503
            error = response.json()["error"]
            assert error["code"] == "sandbox_unavailable"
            assert "SANDBOX=unsafe-none" in error["message"]
        assert service.client.get("/health").status_code == 200
        assert list(service.settings.sandbox.root.iterdir()) == []


def test_sandbox_unsafe_none_runs_code_without_bubblewrap_and_warns_at_start(
    make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="tool_service.sandbox"),
        make_service(SANDBOX="unsafe-none", SANDBOX_BWRAP="/nonexistent/bwrap") as service,
    ):
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert any("SANDBOX=unsafe-none" in record.getMessage() for record in warnings)
        code = "import os\nopen('out.txt', 'w').write('made')\nprint(os.getcwd() != '/work')\n"
        final = _run(service, code)[-2]
        assert final["exitCode"] == 0
        assert final["codeOutput"] == "True\n"  # on the host, not in a sandbox
        assert [info["fileName"] for info in final["fileInfo"]] == ["out.txt"]
        _assert_healthy_and_clean(service)


def test_an_unknown_sandbox_mode_is_a_configuration_error(tmp_path: Path) -> None:
    env = {"SANDBOX": "none", "FILE_ROOT": str(tmp_path), "SANDBOX_ROOT": str(tmp_path)}
    with pytest.raises(ValueError, match="SANDBOX"):
        Settings.from_env(env)
