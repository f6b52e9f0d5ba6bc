"""``agent-gateway run`` against a live gateway: streaming, resume after a drop, exit codes."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import orjson
import pytest

from gateway.app import create_app
from gateway.client import WRITING, RunOptions, TerminalRenderer, run_task
from gateway.settings import Settings
from gateway.upstream import UpstreamSettings
from llm_stub import create_app as create_stub
from llm_stub.settings import Knobs, StubSettings
from tests.e2e.proxy import cuttable_proxy
from tests.gateway.support import INTAKE_WAIT
from tests.helpers import ThreadedServer, free_port, serve_app

QUERY = " ".join(f"token{i}" for i in range(30))


@pytest.fixture(scope="module")
def gateway() -> Iterator[ThreadedServer]:
    settings = Settings(
        echo_token_delay_ms=10, sse_retry_ms=50, heartbeat_interval=1.0, intake_wait=INTAKE_WAIT
    )
    with serve_app(create_app(settings)) as server:
        yield server


def run(options: RunOptions, timeout: float = 30.0) -> tuple[int, str, str]:
    """``run_task`` in a thread of its own (so no event loop of the caller's is in the way)."""
    out, err = io.StringIO(), io.StringIO()
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(run_task(options, out, err)))
    worker.start()
    worker.join(timeout)
    assert codes, f"run_task did not finish in {timeout}s: {err.getvalue()}"
    return codes[0], out.getvalue(), err.getvalue()


def agent_gateway(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


def test_run_streams_an_echo_task_to_completion_and_prints_the_answer(
    gateway: ThreadedServer,
) -> None:
    done = subprocess.run(
        agent_gateway(
            "run", "hello from the terminal", "--agent-type", "0", "--gateway", gateway.url
        ),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "hello from the terminal" in lines
    assert "Plan: Echo" in lines
    assert "  [x] 1. Echo the query" in lines
    assert "COMPLETED" in done.stderr


def test_a_connection_cut_mid_answer_resumes_with_nothing_repeated_or_lost(
    gateway: ThreadedServer,
) -> None:
    # The first connection is cut right after "id: 9" — inside the 9th frame, mid-answer.
    with cuttable_proxy(gateway.port, cut_once_after=b"id: 9\n") as proxy:
        code, out, err = run(RunOptions(QUERY, gateway=proxy.url, agent_type=0))
    assert code == 0, err
    assert proxy.cuts == 1
    assert "connection lost" in err
    assert "resuming after seq 8" in err
    assert out.splitlines().count(QUERY) == 1
    assert out.count("token1 ") == 1


def test_json_mode_prints_every_message_once_in_order_across_a_drop(
    gateway: ThreadedServer,
) -> None:
    with cuttable_proxy(gateway.port, cut_once_after=b"id: 5\n") as proxy:
        code, out, _ = run(RunOptions(QUERY, gateway=proxy.url, agent_type=0, json=True))
    messages = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    assert messages[-1]["messageType"] == "result"
    assert messages[-1]["finish"] is True
    assert (
        "".join(
            m["result"] for m in messages if m["messageType"] == "agent_stream" and not m["isFinal"]
        )
        == QUERY
    )


def test_a_cancelled_task_exits_non_zero_and_says_so(gateway: ThreadedServer) -> None:
    long_query = " ".join(f"w{i}" for i in range(1000))
    proc = subprocess.Popen(
        agent_gateway("run", long_query, "--agent-type", "0", "--gateway", gateway.url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # "task <id> · <gateway>"
        task_id = first.split()[1]
        httpx.post(f"{gateway.url}/api/tasks/{task_id}/cancel", timeout=10).raise_for_status()
        assert proc.wait(20) == 3
        assert "CANCELLED" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_refused_request_exits_non_zero_with_the_gateway_error(gateway: ThreadedServer) -> None:
    code, _, err = run(RunOptions("hi", gateway=gateway.url, agent_type=42))
    assert code == 4
    assert "invalid_request" in err


def test_an_unreachable_gateway_is_retried_a_bounded_number_of_times(  # no server on the port
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(RunOptions("hi", gateway=url, max_retries=2, default_retry_ms=10))
    assert code == 4
    assert err.count("connection lost") == 2
    assert "giving up after 2 retries" in err


@pytest.fixture(scope="module")
def react_gateway() -> Iterator[ThreadedServer]:
    """A gateway whose model is llm_stub (fast) and whose tool service is unreachable."""
    with serve_app(create_stub(StubSettings(knobs=Knobs(tokens_per_second=0)))) as llm:
        upstream = UpstreamSettings(
            llm_base_url=llm.url + "/v1",
            llm_max_retries=0,
            tool_service_url="http://127.0.0.1:9",  # nothing listens: the tool call errs
            mcp_server_urls=(),
        )
        settings = Settings(
            upstream=upstream, sse_retry_ms=50, heartbeat_interval=1.0, intake_wait=INTAKE_WAIT
        )
        with serve_app(create_app(settings)) as server:
            yield server


def test_a_react_thought_stays_with_the_tool_work_and_the_answer_is_printed_as_the_answer(
    react_gateway: ThreadedServer,
) -> None:
    code, out, err = run(RunOptions("compute 17 * 23", gateway=react_gateway.url, agent_type=5))
    snapshot = httpx.get(f"{react_gateway.url}/api/tasks?limit=1", timeout=5).json()
    result = snapshot["tasks"][0]["result"]

    assert code == 0, err
    lines = out.splitlines()
    thought = lines.index(WRITING + "I will use code_interpreter to work on: compute 17 * 23")
    assert lines[thought + 1].startswith("  -> code_interpreter(")
    answer = lines.index("Answer:")
    assert thought < answer and lines[answer + 1 :] == result.splitlines()
    assert result.startswith("Done: Error: tool code_interpreter")


class Tty(io.StringIO):
    """A terminal, as far as the renderer can tell."""

    def isatty(self) -> bool:
        return True


def turn(message_id: str, pieces: list[str], final_type: str) -> list[dict[str, object]]:
    """The frames of one model turn: ``tool_thought`` deltas, then the final frame."""
    frames: list[dict[str, object]] = [
        {"messageId": message_id, "messageType": "tool_thought", "isFinal": False, "toolThought": p}
        for p in pieces
    ]
    field = {"tool_thought": "toolThought", "agent_stream": "result"}[final_type]
    frames.append(
        {
            "messageId": message_id,
            "messageType": final_type,
            "isFinal": True,
            field: "".join(pieces),
        }
    )
    return frames


def test_a_turns_text_is_shown_as_each_piece_arrives_before_its_final_frame() -> None:
    out, err = io.StringIO(), io.StringIO()
    renderer = TerminalRenderer(out, err)
    frames = turn("m1", ["Seventeen ", "times ", "23"], "agent_stream")
    shown_after = ["Seventeen ", "Seventeen times ", "Seventeen times 23"]
    for frame, shown in zip(frames[:-1], shown_after, strict=True):
        renderer.message(frame, "")
        assert out.getvalue() == WRITING + shown
    renderer.message(frames[-1], "")
    renderer.message({"messageType": "result", "result": "Seventeen times 23", "finish": True}, "")
    assert out.getvalue().splitlines() == [
        WRITING + "Seventeen times 23",
        "",
        "Answer:",
        frames[-1]["result"],
    ]


def test_on_a_terminal_a_settled_answer_replaces_its_provisional_lines() -> None:
    out, err = Tty(), Tty()
    renderer = TerminalRenderer(out, err)
    for frame in turn("t1", ["I will ", "use a tool"], "tool_thought"):
        renderer.message(frame, "")
    thought = out.getvalue()
    for frame in turn("a1", ["line one\n", "line two"], "agent_stream"):
        renderer.message(frame, "")

    assert thought == WRITING + "I will use a tool\n"  # a thought stays where it was written
    written = out.getvalue()[len(thought) :]
    provisional = WRITING + "line one\nline two"
    erase = "\r\x1b[1A\x1b[J"  # back to the first of its two lines, and clear them
    assert written == provisional + erase + "\nAnswer:\nline one\nline two\n"
