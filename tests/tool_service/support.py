"""Helpers of the tool-service tests: a client for a running service, a sandbox process probe."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from tool_service import Settings

ServiceFactory = Callable[..., contextlib.AbstractContextManager["Service"]]

TABLE_CSV = "a,b\n1,2\n3,4\n"
"""A small table to upload as ``in.csv`` for :data:`SUM_TABLE`."""

SUM_TABLE = (
    "import csv\n"
    "rows = list(csv.DictReader(open('in.csv')))\n"
    "total = sum(int(r['a']) + int(r['b']) for r in rows)\n"
    "open('out.md', 'w').write(f'# Total\\n{total}\\n')\n"
    "print('total', total)\n"
)
"""Code that reads ``in.csv``, prints ``total 10`` and writes ``out.md`` (``# Total\\n10\\n``)."""


class Service:
    """A running tool service and an HTTP client for it."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.client = httpx.Client(base_url=url, timeout=httpx.Timeout(20.0))

    def upload(self, request_id: str, name: str, content: str) -> None:
        """Upload the file ``name`` for the runs of ``request_id``; the service must accept it."""
        body = {"requestId": request_id, "fileName": name, "content": content}
        response = self.client.post("/v1/file_tool/upload_file", json=body)
        assert response.status_code == 200, response.text

    def stream(self, path: str, body: dict[str, Any]) -> list[Any]:
        """POST ``body``; read the SSE answer to its end: JSON frames, ``heartbeat``, ``[DONE]``."""
        events: list[Any] = []
        with self.client.stream("POST", path, json=body) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if not line:
                    continue
                assert line.startswith("data: "), line
                data = line[len("data: ") :]
                events.append(data if data in ("heartbeat", "[DONE]") else orjson.loads(data))
        return events


def _status(pid: str) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.split(":", 1) for line in handle.read().splitlines() if ":" in line)


def sandbox_processes(root: Path) -> list[int]:
    """Live (not zombie) processes of sandbox runs started from this test process.

    Those are descendants of this process (the ``subreaper`` fixture keeps orphans among them)
    that run in a PID namespace nested in ours (bubblewrap's), or in a folder under ``root``.
    """
    own_depth = len(_status("self")["NSpid"].split())
    parents: dict[int, int] = {}
    candidates = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = _status(entry)
        except OSError:
            continue
        parents[int(entry)] = int(status["PPid"])
        if status["State"].split()[0] in ("Z", "X"):
            continue
        nested = len(status["NSpid"].split()) > own_depth
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            cwd = ""
        if nested or cwd == str(root) or cwd.startswith(str(root) + "/"):
            candidates.append(int(entry))
    me = os.getpid()
    found = []
    for pid in candidates:
        ancestor, steps = parents.get(pid, 0), 0
        while ancestor not in (0, 1, me) and steps < 10_000:
            ancestor, steps = parents.get(ancestor, 0), steps + 1
        if ancestor == me:
            found.append(pid)
    return found
