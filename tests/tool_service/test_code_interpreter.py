"""code_interpreter over HTTP: streaming output, files, code from the LLM, limits, disconnects."""

from __future__ import annotations

import time

import httpx

from tests.tool_service.fake_llm import FakeLLM, Reply
from tests.tool_service.support import SUM_TABLE, TABLE_CSV, Service, sandbox_processes


def _run(service: Service, code: str, **extra: object) -> list:
    body = {"requestId": "run-1", "task": "test", "code": code, "stream": True, **extra}
    return service.stream("/v1/tool/code_interpreter", body)


def test_a_thousand_printed_lines_stream_in_order_and_complete(service: Service) -> None:
    events = _run(service, "for i in range(1000):\n    print('line', i)\n")
    assert events[-1] == "[DONE]"
    frames = [event for event in events if isinstance(event, dict)]
    assert frames[0]["code"].startswith("for i in range(1000)")
    deltas = [frame["codeOutput"] for frame in frames[1:-1]]
    assert all(frame["isFinal"] is False for frame in frames[:-1])
    final = frames[-1]
    assert final["isFinal"] is True and final["exitCode"] == 0
    expected = "".join(f"line {i}\n" for i in range(1000))
    assert "".join(deltas) == expected
    assert final["codeOutput"] == expected


def test_output_streams_while_the_code_is_still_running(service: Service) -> None:
    code = "import sys, time\nprint('first', flush=True)\ntime.sleep(1)\nprint('second')\n"
    seen: list[tuple[float, str]] = []
    started = time.monotonic()
    body = {"requestId": "live", "task": "t", "code": code}
    with service.client.stream("POST", "/v1/tool/code_interpreter", json=body) as response:
        for line in response.iter_lines():
            if '"codeOutput":"first' in line and '"isFinal":false' in line:
                seen.append((time.monotonic() - started, "first"))
            if line == "data: [DONE]":
                seen.append((time.monotonic() - started, "done"))
    assert [name for _, name in seen] == ["first", "done"]
    assert seen[1][0] - seen[0][0] > 0.5  # "first" arrived before the sleep ended


def test_an_infinite_loop_is_killed_at_the_limit_with_a_clear_error(service: Service) -> None:
    started = time.monotonic()
    events = _run(service, "print('spinning', flush=True)\nwhile True:\n    pass\n")
    elapsed = time.monotonic() - started
    assert events[-1] == "[DONE]"
    error_frame = events[-2]
    assert error_frame["isFinal"] is True
    assert error_frame["error"]["code"] == "timeout"
    assert "2 s" in error_frame["error"]["message"]
    assert any("spinning" in frame.get("codeOutput", "") for frame in events[:-2])
    assert 1.9 < elapsed < 8
    assert sandbox_processes(service.settings.sandbox.root) == []


def test_code_interpreter_without_code_gets_its_code_from_the_llm(
    service: Service, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = Reply(
        chunks=["Here is the code:\n```py", "thon\nprint(6 * 7)\n", "```\nDone."]
    )
    events = _run(service, code="", task="multiply six by seven")
    frames = [event for event in events if isinstance(event, dict)]
    assert frames[0]["code"] == "print(6 * 7)"
    assert frames[-1]["codeOutput"] == "42\n"
    assert "multiply six by seven" in fake_llm.last_prompt()
    assert fake_llm.headers[-1]["authorization"] == "Bearer sk-test-key"


def test_stream_false_gives_plain_json(service: Service) -> None:
    response = service.client.post(
        "/v1/tool/code_interpreter",
        json={"requestId": "plain", "task": "t", "code": "print('hi')", "stream": False},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "requestId": "plain",
        "code": "print('hi')",
        "codeOutput": "hi\n",
        "exitCode": 0,
        "fileInfo": [],
        "isFinal": True,
    }


def test_stream_false_timeout_is_a_json_error(service: Service) -> None:
    response = service.client.post(
        "/v1/tool/code_interpreter",
        json={"requestId": "plain", "code": "while True: pass", "stream": False},
    )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"


def test_files_written_by_the_code_are_listed_and_downloadable(service: Service) -> None:
    service.upload("files", "in.csv", TABLE_CSV)
    events = _run(service, SUM_TABLE, requestId="files", fileNames=["in.csv"])
    final = events[-2]
    assert final["codeOutput"] == "total 10\n"
    assert [info["fileName"] for info in final["fileInfo"]] == ["out.md"]
    info = final["fileInfo"][0]
    assert info["fileSize"] == len("# Total\n10\n")
    assert info["downloadUrl"].startswith(service.url + "/v1/file_tool/download/files/")
    download = httpx.get(info["downloadUrl"], timeout=10)
    assert download.status_code == 200
    assert download.text == "# Total\n10\n"


def test_a_client_that_goes_away_gets_its_process_group_killed(service: Service) -> None:
    root = service.settings.sandbox.root
    code = "import subprocess, time\nsubprocess.Popen(['sleep', '30'])\nprint('up', flush=True)\n"
    code += "while True:\n    time.sleep(0.1)\n"
    body = {"requestId": "gone", "task": "t", "code": code}
    running: list[int] = []
    with service.client.stream("POST", "/v1/tool/code_interpreter", json=body) as response:
        for line in response.iter_lines():
            if '"codeOutput":"up' in line:
                running = sandbox_processes(root)
                break  # leaving the loop drops the connection
    assert len(running) >= 2  # python and its sleep child were alive
    # The connection is closed: the service must kill the whole group well before the time limit.
    deadline = time.monotonic() + 1.5
    while sandbox_processes(root) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sandbox_processes(root) == []
    assert service.client.get("/health").status_code == 200
