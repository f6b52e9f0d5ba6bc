"""Shared test helpers: real servers on free loopback ports, and bounded waits.

Streams are tested against real uvicorn servers (``httpx.ASGITransport`` buffers whole
responses, so an endless SSE stream would hang it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """A uvicorn server running an ASGI app in a background thread with its own event loop.

    The listening socket is bound here, before the thread starts (port 0 unless ``port`` is
    given), and handed to uvicorn: a port picked by :func:`free_port` and bound only later can
    be taken meanwhile by another server of a parallel test.
    """

    def __init__(self, app: Any, port: int | None = None, http: str = "auto") -> None:
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(("127.0.0.1", port or 0))
        except OSError:
            self.socket.close()
            raise
        self.port = int(self.socket.getsockname()[1])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", http=http
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.socket.close()


@contextlib.asynccontextmanager
async def client_of(
    server: ThreadedServer, timeout: float = 20.0
) -> AsyncIterator[httpx.AsyncClient]:
    """An async client on ``server``'s base URL, closed when the block ends."""
    async with httpx.AsyncClient(base_url=server.url, timeout=timeout) as client:
        yield client


@contextlib.contextmanager
def serve_app(app: Any, port: int | None = None, http: str = "auto") -> Iterator[ThreadedServer]:
    """Run ``app`` under uvicorn (``http``: its HTTP protocol) on a free port for the block."""
    server = ThreadedServer(app, port, http)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_http_ok(
    url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``url`` until it answers 2xx, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).is_success:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer in {timeout}s: {last!r}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate ``proc`` and wait for it; kill it when it has not exited within 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def running_process(
    argv: list[str],
    health_url: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
    stdout: int | None = None,
    stderr: int | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` for the duration of the block, entered once ``health_url`` answers 2xx.

    ``stdout``/``stderr`` go to :class:`subprocess.Popen` (``subprocess.DEVNULL`` to drop them).
    On exit the process is stopped (:func:`stop_process`), also when it never became healthy.
    """
    proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr)
    try:
        wait_http_ok(health_url, timeout=timeout, proc=proc)
        yield proc
    finally:
        stop_process(proc)


@contextlib.contextmanager
def spawn_service(
    service: str, env: Mapping[str, str] | None = None, health: str = "/healthz"
) -> Iterator[str]:
    """Start ``agent-gateway serve <service>`` as a child process; yield its base URL."""
    port = free_port()
    full_env = {**os.environ, **(env or {}), "HOST": "127.0.0.1", "PORT": str(port)}
    argv = [sys.executable, "-m", "gateway.cli", "serve", service, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with running_process(argv, url + health, env=full_env):
        yield url


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block: across threads
    and across processes, such as the workers of ``pytest -n``."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


NODE_DIR = os.path.join(os.path.dirname(__file__), "node")


def ensure_node_modules() -> str:
    """Install the JavaScript test peers (``tests/node/package.json``) once; return the folder.

    Runs ``npm install`` only when ``node_modules`` is missing, so repeated sessions are fast;
    a lock file keeps parallel test processes from installing into it at the same time.
    """
    with file_lock(os.path.join(NODE_DIR, ".install.lock")):
        marker = os.path.join(NODE_DIR, "node_modules", ".package-lock.json")
        if not os.path.exists(marker):
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_DIR,
                check=True,
                timeout=600,
            )
    return NODE_DIR


def wait_redis(
    port: int,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 10,
    url: str | None = None,
) -> None:
    """Wait until the Redis on ``port`` (or at ``url``) answers PING; fail if ``proc`` exits or
    time runs out."""
    import redis

    client = redis.Redis.from_url(url) if url else redis.Redis(port=port)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)
    finally:
        client.close()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, written in ``folder`` (the openssl
    CLI, else the ``cryptography`` package; fails the test if neither is there)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    openssl = shutil.which("openssl")
    if openssl is not None:
        options = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
        options += " -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
        subprocess.run(
            [openssl, *options.split(), "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return cert, key
    try:
        _write_self_signed(cert, key)
    except ImportError as exc:  # never skip: TLS must be tested
        pytest.fail(f"neither the openssl CLI nor the cryptography package: {exc}", pytrace=False)
    return cert, key


def _write_self_signed(cert: Path, key: Path) -> None:
    """The same certificate with the ``cryptography`` package (raises ImportError without it)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
