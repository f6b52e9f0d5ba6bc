"""``agent-gateway run``: submit one task and follow it live in the terminal.

The task is submitted as a POST-SSE request with an ``Idempotency-Key`` (a retried submit can
never start a second run). When the connection drops, the client resumes with ``Last-Event-ID``
after the last message it rendered, so nothing is shown twice or skipped; reconnects back off
(starting from the server's ``retry:``) and give up after ``max_retries`` failures in a row.

The plan, tasks, tool output and the streamed answer go to stdout (``--json``: one message per
line; :mod:`gateway._terminal` renders the rest); a progress line and connection notices go to
stderr. Exit status: 0 COMPLETED, 1 FAILED, 3 CANCELLED, 4 the gateway refused the request or
could not be reached, 130 interrupted (the task is cancelled).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, TextIO

import httpx
import orjson

from gateway._terminal import WRITING, TerminalRenderer
from gateway.errors import GatewayError
from gateway.protocol.compaction import PieceJoiner
from gateway.upstream.sse import SSEDecoder

__all__ = ["EXIT_CODES", "WRITING", "RunOptions", "TaskFollower", "TerminalRenderer", "run_task"]

EXIT_CODES = {"COMPLETED": 0, "FAILED": 1, "CANCELLED": 3}
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130
_DEFAULT_RETRY_MS = 1000
_MAX_DELAY = 30.0


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What to run and how to reach the gateway."""

    query: str
    gateway: str = "http://127.0.0.1:8080"
    agent_type: int | None = None
    json: bool = False
    max_retries: int = 8
    default_retry_ms: int = _DEFAULT_RETRY_MS  # until the gateway sends its own ``retry:``
    connect_timeout: float = 5.0
    read_timeout: float = 60.0  # several heartbeats: a silent connection is a dead one


class RequestRefused(GatewayError):
    """The gateway answered with a 4xx: retrying would not help."""


class _Retryable(Exception):
    """The gateway answered with a status worth retrying (429, 5xx)."""


class TaskFollower:
    """Submits a task and follows its log to the end, resuming after dropped connections."""

    def __init__(self, options: RunOptions, renderer: TerminalRenderer) -> None:
        self.options = options
        self.renderer = renderer
        self.base = options.gateway.rstrip("/")
        self.task_id: str | None = None
        self.last_seq = 0
        self.retry_ms: int | None = None
        self.final_status: str | None = None
        self.error: dict[str, Any] | None = None
        self.idempotency_key = uuid.uuid4().hex

    async def run(self) -> int:
        """Follow the task to its end; the exit status."""
        timeout = httpx.Timeout(
            self.options.read_timeout, connect=self.options.connect_timeout, pool=None
        )
        failures = 0
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            while self.final_status is None:
                before = self.last_seq
                try:
                    if await self._connect(http):
                        break
                    reason = "the stream ended before the task did"
                except RequestRefused as exc:
                    self.renderer.notice(f"error: {exc}")
                    return EXIT_UNREACHABLE
                except (httpx.TransportError, _Retryable) as exc:
                    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                failures = 1 if self.last_seq > before else failures + 1
                if failures > self.options.max_retries:
                    self.renderer.notice(f"giving up after {failures - 1} retries: {reason}")
                    return EXIT_UNREACHABLE
                retry_ms = self.options.default_retry_ms if self.retry_ms is None else self.retry_ms
                base = retry_ms / 1000
                delay = min(_MAX_DELAY, base * 2 ** (failures - 1))
                where = f"after seq {self.last_seq}" if self.task_id else "(submitting again)"
                self.renderer.notice(
                    f"connection lost ({reason}); resuming {where} in {delay:.1f}s "
                    f"[{failures}/{self.options.max_retries}]"
                )
                await asyncio.sleep(delay)
            if self.final_status is None:  # a 204: the log was complete; ask for the outcome
                await self._read_snapshot(http)
        return self._finish()

    async def _connect(self, http: httpx.AsyncClient) -> bool:
        """One connection: True when the task has ended (its finish message, or a 204)."""
        headers = {"Accept": "text/event-stream"}
        if self.task_id is None:
            body: dict[str, Any] = {"query": self.options.query}
            if self.options.agent_type is not None:
                body["agentType"] = self.options.agent_type
            headers["Idempotency-Key"] = self.idempotency_key
            request = http.build_request(
                "POST", f"{self.base}/api/tasks", json=body, headers=headers
            )
        else:
            if self.last_seq:
                headers["Last-Event-ID"] = str(self.last_seq)
            request = http.build_request(
                "GET", f"{self.base}/api/tasks/{self.task_id}/events", headers=headers
            )
        response = await http.send(request, stream=True)
        try:
            if response.status_code == 204:
                return True
            if 400 <= response.status_code < 500 and response.status_code != 429:
                await response.aread()
                raise RequestRefused(_error_text(response))
            if response.status_code != 200:
                raise _Retryable(f"HTTP {response.status_code}")
            if self.task_id is None:
                self.task_id = response.headers.get("x-task-id")
                self.renderer.notice(f"task {self.task_id} · {self.base}")
            return await self._read_events(response)
        finally:
            await response.aclose()

    async def _read_events(self, response: httpx.Response) -> bool:
        decoder = SSEDecoder()
        pieces = PieceJoiner()  # a long final replayed in pieces is rendered whole
        async for chunk in response.aiter_bytes():
            for event in decoder.feed(chunk):
                parsed = orjson.loads(event.data)
                message = pieces.feed(parsed)
                if message is None:
                    continue
                seq = message.get("seq")
                if not isinstance(seq, int) or seq <= self.last_seq:
                    continue  # already rendered (a replay overlapping what we have)
                self.last_seq = seq
                if self.task_id is None:
                    self.task_id = message.get("taskId")
                raw = event.data if message is parsed else orjson.dumps(message).decode()
                self.renderer.message(message, raw)
                self._note_outcome(message)
            if decoder.retry is not None:
                self.retry_ms = decoder.retry
            if self.final_status is not None:
                return True
            self.renderer.progress("RUNNING", self.last_seq, "sse")
        return False

    def _note_outcome(self, message: dict[str, Any]) -> None:
        if not message.get("finish"):
            return
        kind = message.get("messageType")
        if kind == "result":
            self.final_status = "COMPLETED"
        elif kind == "error":
            self.final_status = "FAILED"
            self.error = message.get("error")
        else:
            self.final_status = str(message.get("status") or "FAILED")
            self.error = message.get("error")

    async def _read_snapshot(self, http: httpx.AsyncClient) -> None:
        try:
            response = await http.get(f"{self.base}/api/tasks/{self.task_id}")
            snapshot = response.json()
        except (httpx.HTTPError, ValueError):
            self.final_status = "FAILED"
            self.error = {"code": "unknown", "message": "the task's outcome could not be read"}
            return
        self.final_status = str(snapshot.get("status"))
        self.error = snapshot.get("error")

    def _finish(self) -> int:
        status = self.final_status or "FAILED"
        elapsed = time.monotonic() - self.renderer.started
        self.renderer.end_line()
        if self.error:
            self.renderer.notice(f"error: {self.error.get('code')}: {self.error.get('message')}")
        self.renderer.notice(f"{status} in {elapsed:.1f}s · task {self.task_id}")
        return EXIT_CODES.get(status, 1)


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"HTTP {response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


def run_task(options: RunOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``agent-gateway run``; Ctrl-C cancels the task and exits 130."""
    renderer = TerminalRenderer(out or sys.stdout, err or sys.stderr, options.json)
    follower = TaskFollower(options, renderer)
    try:
        return asyncio.run(follower.run())
    except KeyboardInterrupt:
        renderer.notice("interrupted")
        if follower.task_id:
            try:
                httpx.post(f"{follower.base}/api/tasks/{follower.task_id}/cancel", timeout=10.0)
                renderer.notice(f"task {follower.task_id} cancelled")
            except httpx.HTTPError as exc:
                renderer.notice(f"could not cancel task {follower.task_id}: {exc}")
        return EXIT_INTERRUPTED
