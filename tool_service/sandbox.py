"""Run untrusted Python in a bubblewrap sandbox, streaming its output.

The sandbox (see :mod:`tool_service._bwrap` for what it sees) runs
:mod:`~tool_service._sandbox_runner` as its first process: it copies the request's input files
into the run's bounded working folder, runs the code under the resource limits of
:class:`~tool_service.settings.SandboxSettings`, kills whatever the code left behind, and hands
the files the code wrote back to a host folder of the run, which :meth:`Workspace.written_files`
lists. As root, each run also gets a uid of its own (bubblewrap then runs as that uid).

bubblewrap is probed once, when the :class:`Sandbox` is built. If it cannot run, code execution
is refused (:class:`SandboxUnavailable`, 503) unless ``SANDBOX=unsafe-none``, which runs the
runner on the host with only the resource limits (logged as a warning at start).

Whatever way a run ends (normal exit, wall-clock limit, the caller cancelled because the client
went away), every process of the run is SIGKILLed and its folder removed before control returns;
that cleanup is shielded from cancellation and time-limited.
"""

from __future__ import annotations

import asyncio
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

from ._bwrap import ENV, WORK, interpreter_folders, sandbox_argv, supports
from ._output import Ended, read_output
from ._reaper import kill_all, open_children
from ._sandbox_runner import SCRIPT_NAME, STATUS_NAME
from ._uids import UidLease, UidPool
from .errors import InvalidRequest, NotFound, SandboxError, SandboxUnavailable
from .files import check_file_name
from .settings import SandboxSettings

__all__ = ["Exited", "Sandbox", "Workspace"]

logger = logging.getLogger(__name__)

_HERE = Path(__file__).parent
_RUNNER = (_HERE / "_sandbox_runner.py").read_text(encoding="utf-8")
_WRAPPER = str(_HERE / "_sandbox_wrapper.py")
_CLEANUP_TIMEOUT = 5.0
_MAX_OUTPUT_FILES = 50
_UNSAFE_WORK = ".work"


@dataclass(frozen=True)
class Exited:
    """The sandboxed code ended by itself (``exit_code`` < 0: killed by that signal)."""

    exit_code: int
    truncated: bool


@dataclass
class Workspace:
    """The host folder of one run: the code's files come back here. Holds the input files open."""

    path: Path
    uid: int | None
    inputs: dict[str, int] = field(default_factory=dict)

    def written_files(self) -> list[Path]:
        """The files the code created or changed (regular files with a valid name)."""
        found = []
        for entry in sorted(self.path.iterdir()):
            if entry.name.startswith(".") or not stat.S_ISREG(entry.lstat().st_mode):
                continue
            try:
                check_file_name(entry.name)
            except InvalidRequest:  # not a name a file of the request can have
                logger.info("sandbox output %r skipped: not a valid file name", entry.name)
                continue
            found.append(entry)
        return found[:_MAX_OUTPUT_FILES]


class Sandbox:
    """Creates workspaces and runs code in them under the configured limits."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        settings.root.mkdir(parents=True, exist_ok=True)
        # Traversable but not listable: a run finds its own folder, not its neighbours'.
        settings.root.chmod(0o711)
        # As root, bubblewrap runs as a uid of its own per run (not in unsafe-none mode, which
        # runs as the service's user: it confines nothing anyway).
        self._uids = (
            UidPool(settings.uid_base, settings.uid_count, settings.uid_lock_dir)
            if os.geteuid() == 0 and settings.mode == "bwrap"
            else None
        )
        self._bwrap = shutil.which(settings.bwrap) or settings.bwrap
        self._folders: tuple[str, ...] = ()
        self._disable_userns = False
        self.unavailable: str | None = None
        if settings.mode == "unsafe-none":
            logger.warning(
                "SANDBOX=unsafe-none: code_interpreter runs LLM-written code UNCONFINED on this "
                "host (only resource limits apply); it can read files, use the network and "
                "signal processes of the service's user"
            )
        else:
            self.unavailable = self._probe()
            if self.unavailable is not None:
                logger.error("code execution is disabled: %s", self.unavailable)

    def require_available(self) -> None:
        """Raise :class:`SandboxUnavailable` when code cannot be run safely here."""
        if self.unavailable is not None:
            raise SandboxUnavailable(
                "code execution is disabled: the sandbox (bubblewrap) cannot run on this host "
                f"({self.unavailable}); set SANDBOX=unsafe-none to run code unconfined"
            )

    @asynccontextmanager
    async def workspace(self, inputs: Mapping[str, Path]) -> AsyncIterator[Workspace]:
        """A fresh host folder for a run of ``inputs``; removed (with any process left) on exit."""
        self.require_available()
        lease = self._uids.acquire() if self._uids is not None else None
        workspace = Workspace(self._new_folder(lease), lease.uid if lease else None)
        try:
            for name, source in inputs.items():
                try:
                    workspace.inputs[name] = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
                except OSError as exc:
                    raise NotFound(f"cannot read the file {name!r}: {exc.strerror}") from exc
            yield workspace
        finally:
            with anyio.CancelScope(shield=True):
                for fd in workspace.inputs.values():
                    os.close(fd)
                if lease is not None:
                    if await kill_all(None, lease.uid, _CLEANUP_TIMEOUT):
                        lease.release()
                    else:  # never hand a uid with live processes to another run
                        logger.error(
                            "sandbox uid %d still has processes; not reusing it", lease.uid
                        )
                await anyio.to_thread.run_sync(shutil.rmtree, workspace.path, True)

    async def run(self, workspace: Workspace, code: str) -> AsyncGenerator[str | Exited, None]:
        """Run ``code``; yield its output (stdout and stderr merged) as it comes, then ``Exited``.

        Raises :class:`CodeTimeout` when the wall-clock limit passes (the run is killed first),
        :class:`SandboxError` when the sandbox itself failed.
        """
        script = workspace.path / SCRIPT_NAME
        script.write_text(code, encoding="utf-8")
        self._give(script, workspace.uid)
        folder_fd = os.open(workspace.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            argv, cwd = self._command(workspace, folder_fd)
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=ENV if self.settings.mode == "unsafe-none" else {},
                start_new_session=True,
                pass_fds=[folder_fd, *workspace.inputs.values()],
            )
        except OSError as exc:
            raise SandboxError(f"cannot start the sandbox: {exc.strerror}") from exc
        finally:
            os.close(folder_fd)
        try:
            async with aclosing(read_output(process, self.settings)) as items:
                async for item in items:
                    if isinstance(item, Ended):
                        yield self._exited(workspace, item)
                    else:
                        yield item
        finally:
            with anyio.CancelScope(shield=True):
                # bwrap's child is the init of the run's PID namespace: when it is dead, so is
                # every process of the run (it is also killed through --die-with-parent).
                inits = open_children(process.pid) if process.returncode is None else []
                try:
                    if not await kill_all(
                        process.pid, workspace.uid, _CLEANUP_TIMEOUT, tuple(inits)
                    ):
                        logger.error("sandbox processes of group %d survived SIGKILL", process.pid)
                finally:
                    for fd in inits:
                        os.close(fd)
                with anyio.move_on_after(_CLEANUP_TIMEOUT):
                    await process.wait()

    def _command(self, workspace: Workspace, folder_fd: int) -> tuple[list[str], Path]:
        """The command line of a run, and the folder it starts in."""
        settings = self.settings
        contained = settings.mode == "bwrap"
        work = WORK if contained else str(workspace.path / _UNSAFE_WORK)
        config = {
            "folder_fd": folder_fd,
            "inputs": workspace.inputs,
            "work": work,
            "contained": contained,
            "limits": self._limits(),
            "argv": [settings.python, "-I", "-u", SCRIPT_NAME],
            "env": ENV if contained else {**ENV, "HOME": work},
            "max_files": _MAX_OUTPUT_FILES,
        }
        runner = [settings.python, "-I", "-S", "-c", _RUNNER, json.dumps(config)]
        if not contained:
            os.mkdir(work, 0o700)
            self._give(Path(work), workspace.uid)
            return runner, workspace.path
        return self._launcher(workspace, runner), workspace.path

    def _launcher(self, workspace: Workspace, command: list[str]) -> list[str]:
        """bwrap around ``command``; as root, behind the wrapper that drops to the run's uid."""
        binds = [(folder, folder) for folder in self._folders]
        argv = sandbox_argv(
            self._bwrap,
            binds,
            self.settings.disk_bytes,
            command,
            disable_userns=self._disable_userns,
        )
        if workspace.uid is None:
            return argv
        config = {"uid": workspace.uid, "expose": self._folders, "argv": argv}
        return [self.settings.python, "-I", "-S", _WRAPPER, json.dumps(config)]

    def _exited(self, workspace: Workspace, ended: Ended) -> Exited:
        """The code's exit status, from the runner's status file (or the sandbox's exit code)."""
        exit_code, truncated = ended.returncode, ended.truncated
        try:
            fd = os.open(workspace.path / STATUS_NAME, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as handle:
                status = json.loads(handle.read(4096))
        except (OSError, ValueError):
            status = None
        if isinstance(status, dict) and isinstance(status.get("exit_code"), int):
            if status.get("export_error"):
                logger.warning("sandbox output files lost: %s", status["export_error"])
            return Exited(status["exit_code"], truncated)
        if isinstance(status, dict) and status.get("setup_error"):
            raise SandboxError(f"sandbox setup failed: {status['setup_error']}")
        if exit_code > 128:  # the runner was killed (by the code): bwrap reports 128 + signal
            return Exited(-(exit_code - 128), truncated)
        raise SandboxError(f"the sandbox failed (exit code {exit_code})")

    def _probe(self) -> str | None:
        """Run an empty program in the sandbox once; why it cannot run, or None if it can."""
        try:
            self._folders = interpreter_folders(self.settings.python)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return f"the interpreter {self.settings.python} cannot run: {exc}"
        self._disable_userns = supports(self._bwrap, "--disable-userns")
        lease = self._uids.acquire() if self._uids is not None else None
        workspace = Workspace(self._new_folder(lease), lease.uid if lease else None)
        try:
            argv = self._launcher(workspace, [self.settings.python, "-I", "-S", "-c", "pass"])
            done = subprocess.run(
                argv, capture_output=True, env={}, timeout=30, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{self._bwrap}: {exc.strerror if isinstance(exc, OSError) else exc}"
        finally:
            if lease is not None:
                lease.release()
            shutil.rmtree(workspace.path, ignore_errors=True)
        if done.returncode != 0:
            text = done.stderr.decode("utf-8", "replace").strip().splitlines()
            return text[-1] if text else f"bwrap exited with {done.returncode}"
        return None

    def _new_folder(self, lease: UidLease | None) -> Path:
        path = self.settings.root / os.urandom(12).hex()
        path.mkdir(mode=0o700)
        self._give(path, lease.uid if lease else None)
        return path

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
