"""``agent-gateway dev``: every service of the system on one machine, as supervised children.

Each service runs as ``python -m gateway.cli serve <name>`` in its own session (so a terminal's
Ctrl-C reaches only the supervisor, which then stops the children in order), with its output
prefixed by its name. The supervisor wires the services together through the environment, waits
for every health endpoint, and prints the URLs. A child that dies is reported and restarted once;
if it dies again the whole system is stopped and ``dev`` exits non-zero. SIGINT and SIGTERM stop
all children: SIGTERM, a bounded wait, then SIGKILL for any that linger.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from gateway.errors import GatewayError

__all__ = ["DEV_ORDER", "SERVICES", "DevConfig", "ServiceSpec", "run_dev", "service_env"]


@dataclass(frozen=True)
class ServiceSpec:
    """Where a service's app factory lives and which port it listens on by default."""

    factory: str
    port: int
    health: str


SERVICES: dict[str, ServiceSpec] = {
    "gateway": ServiceSpec("gateway.app:create_app", 8080, "/healthz"),
    "tool_service": ServiceSpec("tool_service.app:create_app", 1601, "/health"),
    "mcp_client": ServiceSpec("mcp_client.app:create_app", 8188, "/health"),
    "llm_stub": ServiceSpec("llm_stub.app:create_app", 8000, "/health"),
    "frontend_stub": ServiceSpec("frontend_stub.app:create_app", 3000, "/health"),
}

#: Start order (dependencies first); they are stopped in the reverse order.
DEV_ORDER = ("llm_stub", "tool_service", "mcp_client", "gateway", "frontend_stub")
_WIDTH = max(len(name) for name in DEV_ORDER)
_HEALTH_POLL = 0.1


@dataclass(frozen=True, slots=True)
class DevConfig:
    """What ``dev`` runs: the bind address, one port per service, and its time limits."""

    host: str = "127.0.0.1"
    ports: Mapping[str, int] = field(
        default_factory=lambda: {name: SERVICES[name].port for name in DEV_ORDER}
    )
    startup_timeout: float = 60.0
    stop_timeout: float = 10.0
    log_level: str = "info"

    @property
    def connect_host(self) -> str:
        """The address clients use: a wildcard bind address is reached on loopback."""
        return "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host

    def url(self, service: str) -> str:
        """The base URL at which ``service`` is reached."""
        return f"http://{self.connect_host}:{self.ports[service]}"


def service_env(config: DevConfig, service: str, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of ``service``: ``base`` plus the wiring between the services.

    ``LLM_BASE_URL`` (and key and model) are kept when already set, so ``dev`` can drive a
    real LLM; everything else that names another service points at this ``dev``'s ports.
    ``REDIS_URL`` passes through unchanged: unset means the embedded store. The MCP servers
    the gateway is given (``MCP_SERVER_URLS``, often local ones) are the bridge's allowlist
    unless ``MCP_ALLOWED_SERVERS`` is set. ``SERVICE_TOKEN`` passes through (the supervisor
    puts a random one in ``base`` when it is unset).
    """
    env = dict(base)
    env["HOST"] = config.host
    env["PORT"] = str(config.ports[service])
    env.setdefault("LLM_BASE_URL", config.url("llm_stub") + "/v1")
    env["TOOL_SERVICE_URL"] = config.url("tool_service")
    env["MCP_CLIENT_URL"] = config.url("mcp_client")
    env["GATEWAY_URL"] = config.url("gateway")
    if base.get("MCP_SERVER_URLS", "").strip():
        env.setdefault("MCP_ALLOWED_SERVERS", base["MCP_SERVER_URLS"])
    frontend_port = config.ports["frontend_stub"]
    origins = [f"http://127.0.0.1:{frontend_port}", f"http://localhost:{frontend_port}"]
    extra = [o.strip() for o in base.get("CORS_ORIGINS", "").split(",") if o.strip()]
    env["CORS_ORIGINS"] = ",".join(dict.fromkeys([*origins, *extra]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if the supervisor dies without stopping it (a SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by ``pid`` (each child is started in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class DevFailure(GatewayError):
    """The system could not be started or kept running."""


@dataclass(slots=True)
class _Child:
    name: str
    env: dict[str, str]
    health_url: str
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0


class Supervisor:
    """Starts, watches, restarts (once) and stops the services of one ``dev`` run."""

    def __init__(self, config: DevConfig, base_env: Mapping[str, str]) -> None:
        self.config = config
        # One token for the run: the tool service and the bridge then answer only the gateway.
        base_env = {"SERVICE_TOKEN": secrets.token_urlsafe(32), **base_env}
        self.children = [
            _Child(
                name,
                service_env(config, name, base_env),
                config.url(name) + SERVICES[name].health,
            )
            for name in DEV_ORDER
        ]
        self.exits: asyncio.Queue[_Child | None] = asyncio.Queue()
        self.stopping = False
        self.group: asyncio.TaskGroup | None = None
        self.watchers: set[asyncio.Task[None]] = set()

    def say(self, text: str) -> None:
        print(f"agent-gateway dev: {text}", flush=True)

    async def run(self) -> int:
        """Run until a signal (exit 0) or an unrecoverable child failure (exit 1)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            async with asyncio.TaskGroup() as group:
                self.group = group
                try:
                    return await self._supervise()
                except DevFailure as exc:
                    self.say(f"error: {exc}")
                    return 1
                finally:
                    # Shielded: a cancellation here must not leave children running.
                    await asyncio.shield(self._stop_all())
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self.stopping:
            self.say(f"{sig.name} received; stopping all services")
        self.stopping = True
        self.exits.put_nowait(None)

    async def _supervise(self) -> int:
        store = "Redis at REDIS_URL" if self.children[0].env.get("REDIS_URL") else "embedded store"
        self.say(f"starting {len(self.children)} services ({store})")
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
            for child in self.children:
                await self._spawn(child)
            await self._wait_all_healthy(http)
            if self.stopping:
                return 0
            self._banner()
            while True:
                exited = await self.exits.get()
                if exited is None or self.stopping:
                    return 0
                await self._restart(http, exited)

    async def _wait_all_healthy(self, http: httpx.AsyncClient) -> None:
        failure: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as group:
                for child in self.children:
                    group.create_task(self._wait_healthy(http, child))
        except* DevFailure as failures:
            failure = failures.exceptions[0]
        if failure is not None:
            raise failure

    async def _spawn(self, child: _Child) -> None:
        command = [sys.executable, "-m", "gateway.cli", "serve", child.name]
        command += ["--log-level", self.config.log_level]
        child.proc = await asyncio.create_subprocess_exec(
            *command,
            env=child.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            limit=1 << 20,
        )
        self.say(f"started {child.name} (pid {child.proc.pid}) on {child.health_url}")
        if self.group is None:
            raise RuntimeError("the supervisor is not running")
        self.watchers.add(
            self.group.create_task(self._watch(child, child.proc), name=f"watch-{child.name}")
        )

    async def _watch(self, child: _Child, proc: asyncio.subprocess.Process) -> None:
        """Relay the child's output line by line, then report its exit."""
        prefix = f"[{child.name:<{_WIDTH}}] ".encode()
        out = sys.stdout.buffer
        if proc.stdout is not None:
            while True:
                try:
                    line = await proc.stdout.readline()
                except ValueError:  # a line over the limit: relay what is buffered
                    line = await proc.stdout.read(1 << 20)
                if not line:
                    break
                with contextlib.suppress(OSError):  # our own output is gone: keep supervising
                    out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
                    out.flush()
        await proc.wait()
        self.exits.put_nowait(child)

    async def _wait_healthy(self, http: httpx.AsyncClient, child: _Child) -> None:
        deadline = asyncio.get_running_loop().time() + self.config.startup_timeout
        while not self.stopping:
            proc = child.proc
            if proc is None or proc.returncode is not None:
                code = proc.returncode if proc else None
                raise DevFailure(
                    f"{child.name} exited with code {code} while starting "
                    f"(is port {self.config.ports[child.name]} already in use?)"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(child.health_url)).is_success:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise DevFailure(
                    f"{child.name} did not become healthy in {self.config.startup_timeout:g} s"
                )
            await asyncio.sleep(_HEALTH_POLL)

    async def _restart(self, http: httpx.AsyncClient, child: _Child) -> None:
        code = child.proc.returncode if child.proc else None
        if child.restarts >= 1:
            raise DevFailure(f"{child.name} exited with code {code} again; stopping everything")
        child.restarts += 1
        self.say(f"{child.name} exited with code {code}; restarting it (once)")
        await self._spawn(child)
        await self._wait_healthy(http, child)
        if not self.stopping:
            self.say(f"{child.name} is back on {self.config.url(child.name)}")

    def _banner(self) -> None:
        notes = {
            "gateway": "task API, SSE (/healthz)",
            "llm_stub": "OpenAI-compatible stub at /v1",
            "frontend_stub": "<- open this in a browser",
        }
        lines = [f"all services are up on {self.config.connect_host}:"]
        for child in self.children:
            note = notes.get(child.name, "")
            line = f"  {child.name:<{_WIDTH}}  {self.config.url(child.name):<28} {note}"
            lines.append(line.rstrip())
        env = self.children[0].env
        store = "Redis" if env.get("REDIS_URL") else "embedded"
        lines.append(f"  LLM: {env['LLM_BASE_URL']}   store: {store}")
        lines.append("Press Ctrl-C to stop.")
        print("\n".join(lines), flush=True)

    async def _stop_all(self) -> None:
        """SIGTERM every child's process group, wait, SIGKILL what is left; end the watchers."""
        self.stopping = True
        running = [c.proc for c in reversed(self.children) if c.proc and c.proc.returncode is None]
        for proc in running:
            _signal_group(proc.pid, signal.SIGTERM)
        waits = [asyncio.ensure_future(proc.wait()) for proc in running]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self.config.stop_timeout)
            for proc in running:
                # The whole group: a service's own children (sandboxed code) go with it.
                _signal_group(proc.pid, signal.SIGKILL)
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        # A grandchild that outlived its service may still hold the output pipe open.
        _, lingering = await asyncio.wait(self.watchers, timeout=1.0) if self.watchers else ((), ())
        for watcher in lingering:
            watcher.cancel()
        self.say("all services stopped")


def run_dev(config: DevConfig, base_env: Mapping[str, str] | None = None) -> int:
    """Run the whole system until Ctrl-C; the exit status of ``agent-gateway dev``."""
    env = os.environ if base_env is None else base_env
    return asyncio.run(Supervisor(config, env).run())
