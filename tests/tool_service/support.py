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


class Service:
    """A running tool service and an HTTP client for it."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.client = httpx.Client(base_url=url, timeout=httpx.Timeout(20.0))

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


def sandbox_processes(root: Path) -> list[int]:
    """Live (not zombie) processes whose working directory is inside ``root``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X") and (cwd == str(root) or cwd.startswith(str(root) + "/")):
            found.append(int(entry))
    return found
