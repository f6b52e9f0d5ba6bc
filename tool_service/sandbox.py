"""Run untrusted Python in a separate, limited ``python -I`` process, streaming its output.

Each run gets its own folder (holding the request's files), a scrubbed environment (only ``PATH``,
``LANG`` and ``HOME``), its own session and process group, and the resource limits of
:class:`~tool_service.settings.SandboxSettings` (CPU seconds, address space, file size, open files,
processes). As root it also runs under a uid of its own, so ``RLIMIT_NPROC`` really caps a fork
bomb (root is exempt from it) and the service's ``/proc/<pid>/environ`` is out of its reach.

Whatever way a run ends (normal exit, wall-clock limit, the caller cancelled because the client
went away), every process of the run is SIGKILLed and the folder removed before control returns;
that cleanup is shielded from cancellation and time-limited.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from ._reaper import kill_all
from ._sandbox_wrapper import SETUP_FAILED
from ._uids import UidPool
from .errors import CodeTimeout, SandboxError
from .settings import SandboxSettings

__all__ = ["Exited", "Sandbox", "Workspace"]

logger = logging.getLogger(__name__)

SCRIPT_NAME = ".main.py"
_WRAPPER = str(Path(__file__).with_name("_sandbox_wrapper.py"))
_READ_SIZE = 64 * 1024
_CLEANUP_TIMEOUT = 5.0
_MAX_OUTPUT_FILES = 50
_POLL_INTERVAL = 0.1
_EXIT_GRACE = 0.2


@dataclass(frozen=True)
class Exited:
    """The sandboxed process ended by itself (``exit_code`` < 0: killed by that signal)."""

    exit_code: int
    truncated: bool


@dataclass
class Workspace:
    """The folder of one sandbox run and what it started with."""

    path: Path
    uid: int | None
    inputs: dict[str, tuple[int, int]] = field(default_factory=dict)

    def written_files(self) -> list[Path]:
        """Regular files at the top of the folder that the code created or changed."""
        found = []
        for entry in sorted(self.path.iterdir()):
            info = entry.lstat()
            if entry.name.startswith(".") or not stat.S_ISREG(info.st_mode):
                continue
            if self.inputs.get(entry.name) != (info.st_size, info.st_mtime_ns):
                found.append(entry)
        return found[:_MAX_OUTPUT_FILES]


class Sandbox:
    """Creates workspaces and runs code in them under the configured limits."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        settings.root.mkdir(parents=True, exist_ok=True)
        # Traversable but not listable: a run finds its own folder, not its neighbours'.
        settings.root.chmod(0o711)
        self._as_root = os.geteuid() == 0
        self._keep_read_access = self._as_root and not _world_runnable(settings.python)
        self._uids = (
            UidPool(settings.uid_base, settings.uid_count, settings.uid_lock_dir)
            if self._as_root
            else None
        )

    @asynccontextmanager
    async def workspace(self, inputs: Mapping[str, Path]) -> AsyncIterator[Workspace]:
        """A fresh folder holding copies of ``inputs``; removed (with any process left) on exit."""
        lease = self._uids.acquire() if self._uids is not None else None
        uid = lease.uid if lease is not None else None
        path = self.settings.root / os.urandom(12).hex()
        try:
            path.mkdir(mode=0o700)
            workspace = Workspace(path, uid)
            for name, source in inputs.items():
                target = path / name
                shutil.copyfile(source, target)
                info = target.stat()
                workspace.inputs[name] = (info.st_size, info.st_mtime_ns)
                self._give(target, uid)
            self._give(path, uid)
            yield workspace
        finally:
            with anyio.CancelScope(shield=True):
                if lease is not None:
                    if await kill_all(None, lease.uid, _CLEANUP_TIMEOUT):
                        lease.release()
                    else:  # never hand a uid with live processes to another run
                        logger.error("sandbox uid %d still has processes; not reusing it", uid)
                await anyio.to_thread.run_sync(shutil.rmtree, path, True)

    async def run(self, workspace: Workspace, code: str) -> AsyncGenerator[str | Exited, None]:
        """Run ``code``; yield its output (stdout and stderr merged) as it comes, then ``Exited``.

        Raises :class:`CodeTimeout` when the wall-clock limit passes (the run is killed first).
        """
        settings = self.settings
        script = workspace.path / SCRIPT_NAME
        script.write_text(code, encoding="utf-8")
        self._give(script, workspace.uid)
        config = {
            "limits": self._limits(),
            "uid": workspace.uid,
            "keep_read_access": self._keep_read_access,
            "argv": [settings.python, "-I", "-u", SCRIPT_NAME],
        }
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(workspace.path),
        }
        try:
            process = await asyncio.create_subprocess_exec(
                settings.python, "-I", "-S", _WRAPPER, json.dumps(config),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=workspace.path,
                env=env,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise SandboxError(f"cannot start the sandbox: {exc.strerror}") from exc
        try:
            async with aclosing(self._stream(process)) as items:
                async for item in items:
                    yield item
        finally:
            with anyio.CancelScope(shield=True):
                if not await kill_all(process.pid, workspace.uid, _CLEANUP_TIMEOUT):
                    logger.error("sandbox processes of group %d survived SIGKILL", process.pid)
                with anyio.move_on_after(_CLEANUP_TIMEOUT):
                    await process.wait()

    async def _stream(
        self, process: asyncio.subprocess.Process
    ) -> AsyncGenerator[str | Exited, None]:
        if process.stdout is None:
            raise SandboxError("the sandbox has no output pipe")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        budget = self.settings.max_output_bytes
        truncated = False
        exited_at: float | None = None
        while True:
            now = loop.time()
            if now >= deadline:
                raise CodeTimeout(
                    f"the code ran longer than {self.settings.timeout:g} s and was killed"
                )
            # The run ends when the main process exits, even if a child it left behind still
            # holds the pipe open: its output is drained briefly, then the child is killed.
            if exited_at is None and process.returncode is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > _EXIT_GRACE:
                break
            try:
                data = await asyncio.wait_for(
                    process.stdout.read(_READ_SIZE), min(deadline - now, _POLL_INTERVAL)
                )
            except TimeoutError:
                continue
            if not data:
                break
            if truncated:
                continue  # keep draining so the code never blocks on a full pipe
            if len(data) > budget:
                data, truncated = data[:budget], True
            budget -= len(data)
            text = decoder.decode(data)
            if truncated:
                text += decoder.decode(b"", final=True)
                text += f"\n[output truncated after {self.settings.max_output_bytes} bytes]\n"
            if text:
                yield text
        try:
            exit_code = await asyncio.wait_for(process.wait(), max(deadline - loop.time(), 0.01))
        except TimeoutError:
            raise CodeTimeout(
                f"the code ran longer than {self.settings.timeout:g} s and was killed"
            ) from None
        tail = "" if truncated else decoder.decode(b"", final=True)
        if tail:
            yield tail
        if exit_code == SETUP_FAILED:
            logger.error("sandbox setup failed (exit code %d)", exit_code)
        yield Exited(exit_code, truncated)

    def _limits(self) -> dict[str, tuple[int, int]]:
        settings = self.settings
        return {
            "RLIMIT_CPU": (settings.cpu_seconds, settings.cpu_seconds + 1),
            "RLIMIT_AS": (settings.memory_bytes, settings.memory_bytes),
            "RLIMIT_FSIZE": (settings.file_bytes, settings.file_bytes),
            "RLIMIT_NOFILE": (settings.open_files, settings.open_files),
            "RLIMIT_NPROC": (settings.max_procs, settings.max_procs),
            "RLIMIT_CORE": (0, 0),
        }

    @staticmethod
    def _give(path: Path, uid: int | None) -> None:
        """Hand ``path`` to the run's uid (nothing to do when not running as root)."""
        if uid is not None:
            os.chown(path, uid, uid, follow_symlinks=False)


def _world_runnable(python: str) -> bool:
    """Can any user run ``python`` (every folder on its real path searchable by others)?"""
    path = Path(os.path.realpath(python))
    try:
        if not path.stat().st_mode & stat.S_IXOTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)
    except OSError:
        return False
