"""Session fixtures: a real Redis server (never a mock) and the anyio backend; how the suite
is spread over ``pytest -n`` workers (see ``addopts`` in pyproject.toml).

Under xdist each worker is a process of its own with its own session fixtures (its own
``redis-server``); what is made once for all of them (the JavaScript peers, the TCK's
virtualenv) is made under a file lock.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis

from tests.helpers import free_port, self_signed_certificate, wait_redis


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker more than there are cores, at most 8. The suite mostly waits
    (on servers, subprocesses, a paced model), so a core has room for more than one worker;
    past 8, the longest test file (the TCK's, minutes) bounds the run anyway."""
    return min((os.cpu_count() or 1) + 1, 8)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files holding a test marked ``slow`` first, each file's tests in their own order:
    with ``--dist loadfile`` the longest files start at once rather than end the run alone."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis for the whole session: ``REDIS_URL`` if set, else our own ``redis-server``.

    Fails loudly when neither can be had: the store is tested against real Redis only.
    """
    url = os.environ.get("REDIS_URL")
    if url:
        redis.Redis.from_url(url).ping()
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed and REDIS_URL is not set", pytrace=False)
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="agw-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_redis(port, proc)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_tls_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis that speaks only TLS (a self-signed certificate, trusted through the URL's
    ``ssl_ca_certs``), started for the session: ``rediss://`` URLs take redis-py's path."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed", pytrace=False)
    folder = tmp_path_factory.mktemp("redis-tls")
    cert, key = self_signed_certificate(folder)
    port = free_port()
    args = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    args += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(folder)]
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", "0", *args], stdout=subprocess.DEVNULL
    )
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    try:
        wait_redis(port, proc, url=url)
    except RuntimeError as exc:
        pytest.fail(f"{exc} (is it built with TLS?)", pytrace=False)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A local 3-master Redis Cluster on loopback ports, started for the session."""
    binary = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    if binary is None or cli is None:
        pytest.fail("redis-server and redis-cli are needed for the cluster tests", pytrace=False)
    workdir = tempfile.mkdtemp(prefix="agw-cluster-")
    ports = _cluster_ports(3)
    procs = []
    for port in ports:
        folder = os.path.join(workdir, str(port))
        os.makedirs(folder)
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    os.path.join(folder, "nodes.conf"),
                    "--dir",
                    folder,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
            )
        )
    try:
        for port in ports:
            wait_redis(port)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=30,
        )
        client = redis.Redis(port=ports[0])
        deadline = time.monotonic() + 30
        while client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
            if time.monotonic() > deadline:
                pytest.fail("the Redis Cluster did not become ready", pytrace=False)
            time.sleep(0.1)
        client.close()
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster-bus ports (port + 10000) are free and valid too."""
    ports: list[int] = []
    for candidate in random.sample(range(20000, 45000), 400):
        if len(ports) == count:
            break
        if all(_is_free(p) for p in (candidate, candidate + 10000)):
            ports.append(candidate)
    return ports


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
