"""Typed, immutable settings of the tool service, read from the environment once.

``create_app()`` calls :meth:`Settings.from_env` a single time and passes the result down; nothing
else in the package reads ``os.environ``. The LLM API key never appears in a ``repr``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["LLMSettings", "SandboxSettings", "Settings"]

_MIB = 1024 * 1024


@dataclass(frozen=True)
class LLMSettings:
    """Where the OpenAI-compatible chat-completions server is and how long to wait for it."""

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str = field(default="", repr=False)
    model: str = "stub"
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    total_timeout: float = 300.0


SandboxMode = Literal["bwrap", "unsafe-none"]


@dataclass(frozen=True)
class SandboxSettings:
    """How the code interpreter confines a run (``mode``) and the limits of one run.

    ``bwrap`` (the default) runs the code in bubblewrap namespaces; ``unsafe-none`` runs it
    unconfined but for the resource limits (for hosts where bubblewrap cannot run).
    ``disk_bytes`` bounds each of the run's writable places (its folder and ``/tmp``).
    """

    root: Path
    mode: SandboxMode = "bwrap"
    bwrap: str = "bwrap"
    timeout: float = 30.0
    cpu_seconds: int = 60
    memory_bytes: int = 1024 * _MIB
    file_bytes: int = 20 * _MIB
    open_files: int = 64
    max_procs: int = 64
    max_output_bytes: int = _MIB
    disk_bytes: int = 100 * _MIB
    uid_base: int = 200_000
    uid_count: int = 1000
    uid_lock_dir: Path = Path(tempfile.gettempdir()) / "tool-sandbox-uids"
    python: str = sys.executable


@dataclass(frozen=True)
class Settings:
    """Everything the tool service is configured with."""

    llm: LLMSettings
    sandbox: SandboxSettings
    file_root: Path
    search_corpus_dir: Path | None = None
    searxng_url: str | None = None
    heartbeat_interval: float = 15.0
    max_file_bytes: int = 20 * _MIB
    public_url: str | None = None
    service_token: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``environ`` (default ``os.environ``).

        Unset values take their defaults; ``FILE_ROOT`` and ``SANDBOX_ROOT`` default to fresh
        temporary folders. A malformed number raises :class:`ValueError` naming the variable.
        """
        env = os.environ if environ is None else environ
        reader = _EnvReader(env)
        max_file_bytes = reader.integer("MAX_FILE_BYTES", 20 * _MIB)
        code_timeout = reader.number("CODE_TIMEOUT", 30.0)
        llm = LLMSettings(
            base_url=reader.text("LLM_BASE_URL", LLMSettings.base_url).rstrip("/"),
            api_key=reader.text("LLM_API_KEY", ""),
            model=reader.text("LLM_MODEL", LLMSettings.model),
            connect_timeout=reader.number("LLM_CONNECT_TIMEOUT", LLMSettings.connect_timeout),
            read_timeout=reader.number("LLM_READ_TIMEOUT", LLMSettings.read_timeout),
            total_timeout=reader.number("LLM_TOTAL_TIMEOUT", LLMSettings.total_timeout),
        )
        sandbox = SandboxSettings(
            root=reader.folder("SANDBOX_ROOT", "tool-sandbox-"),
            mode=_sandbox_mode(env.get("SANDBOX") or "bwrap"),
            bwrap=reader.text("SANDBOX_BWRAP", SandboxSettings.bwrap),
            timeout=code_timeout,
            # The CPU limit backs up the wall-clock limit (a busy loop cannot outlive both).
            cpu_seconds=reader.integer("CODE_CPU_SECONDS", int(code_timeout) + 1),
            memory_bytes=reader.integer("CODE_MEMORY_MB", 1024) * _MIB,
            file_bytes=max_file_bytes,
            open_files=reader.integer("CODE_OPEN_FILES", SandboxSettings.open_files),
            max_procs=reader.integer("CODE_MAX_PROCS", SandboxSettings.max_procs),
            max_output_bytes=reader.integer("CODE_MAX_OUTPUT_BYTES", _MIB),
            disk_bytes=reader.integer("CODE_DISK_MB", 100) * _MIB,
            uid_base=reader.integer("SANDBOX_UID_BASE", SandboxSettings.uid_base),
            uid_lock_dir=Path(env.get("SANDBOX_UID_LOCK_DIR") or SandboxSettings.uid_lock_dir),
            python=reader.text("SANDBOX_PYTHON", sys.executable),
        )
        corpus = env.get("SEARCH_CORPUS_DIR")
        return cls(
            llm=llm,
            sandbox=sandbox,
            file_root=reader.folder("FILE_ROOT", "tool-files-"),
            search_corpus_dir=Path(corpus) if corpus else None,
            searxng_url=(env.get("SEARXNG_URL") or "").rstrip("/") or None,
            heartbeat_interval=reader.number("HEARTBEAT_INTERVAL", 15.0),
            max_file_bytes=max_file_bytes,
            public_url=(env.get("PUBLIC_URL") or "").rstrip("/") or None,
            service_token=(env.get("SERVICE_TOKEN") or "").strip(),
        )


def _sandbox_mode(raw: str) -> SandboxMode:
    if raw == "bwrap":
        return "bwrap"
    if raw == "unsafe-none":
        return "unsafe-none"
    raise ValueError(f"SANDBOX must be 'bwrap' or 'unsafe-none', got {raw!r}")


@dataclass(frozen=True)
class _EnvReader:
    env: Mapping[str, str]

    def text(self, name: str, default: str) -> str:
        return self.env.get(name) or default

    def number(self, name: str, default: float) -> float:
        raw = self.env.get(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {raw!r}") from None
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {raw!r}")
        return value

    def integer(self, name: str, default: int) -> int:
        raw = self.env.get(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {raw!r}") from None
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {raw!r}")
        return value

    def folder(self, name: str, temp_prefix: str) -> Path:
        raw = self.env.get(name)
        path = Path(raw) if raw else Path(tempfile.mkdtemp(prefix=temp_prefix))
        return path.resolve()
