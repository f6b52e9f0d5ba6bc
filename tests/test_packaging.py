"""The wheel as a user gets it: built from the declared sources, installed in a fresh venv with
its dependencies from the package index, imported and started outside this checkout.

Two venvs: one with the newest versions the declared ranges allow, one with every dependency
pinned to its declared floor (so a floor the code outgrew, or an import nobody declared, fails
here rather than on a user's machine). Both run from a directory outside the repository with a
bare environment, so nothing of this checkout can be imported by accident.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from importlib.metadata import files, packages_distributions
from pathlib import Path

import httpx
import pytest

from gateway.cli import SERVICES
from tests.helpers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = tuple(
    p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
)
INSTALL_TIMEOUT = 240
START_TIMEOUT = 30.0


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(*extras: str) -> set[str]:
    """The distributions pyproject.toml names directly: the dependencies, plus ``extras``."""
    project = PYPROJECT["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"].get(extra, [])
    names = {_canonical(re.split(r"[\[<>=!~;\s]", line, maxsplit=1)[0]) for line in lines}
    return names - {"agent-gateway"}


def _imported_distributions(folders: Iterable[str]) -> dict[str, set[str]]:
    """Distribution -> the files under ``folders`` that import it (absolute imports only)."""
    local = {*PACKAGES, "tests", "bench"}
    owners = packages_distributions()
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    roots = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    roots = [node.module.split(".")[0]]
                else:
                    continue
                for root in roots:
                    if root in sys.stdlib_module_names or root in local:
                        continue
                    for dist in _owners_of(node, root, owners):
                        found.setdefault(_canonical(dist), set()).add(str(path.relative_to(ROOT)))
    return found


def _owners_of(node: ast.Import | ast.ImportFrom, root: str, owners: dict) -> list[str]:
    """The distributions that provide what ``node`` imports from ``root``: for a namespace
    package several distributions share (``google``), only those holding the submodule."""
    dists = owners.get(root, [f"<no distribution for {root}>"])
    if len(dists) < 2:
        return list(dists)
    modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
    folders = {"/".join(m.split(".")[:2]) + "/" for m in modules if m and "." in m}
    holding = [
        dist
        for dist in dists
        if any(str(f).startswith(tuple(folders)) for f in (files(dist) or ()))
    ]
    return holding or list(dists)


def test_every_package_the_product_imports_is_a_declared_dependency() -> None:
    imported = _imported_distributions(PACKAGES)
    undeclared = {dist: files for dist, files in imported.items() if dist not in _declared()}
    assert undeclared == {}


def test_every_package_the_tests_and_the_bench_import_is_declared_in_their_extras() -> None:
    imported = _imported_distributions(["tests", "bench"])
    declared = _declared("test", "bench")
    undeclared = {dist: files for dist, files in imported.items() if dist not in declared}
    assert undeclared == {}


def _pip_env() -> dict[str, str]:
    """The environment for pip: this machine's (its index settings and cache), no PYTHONPATH."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _bare_env(home: Path) -> dict[str, str]:
    """What a service gets: a PATH and a HOME, none of this checkout's settings."""
    return {"PATH": os.defpath, "HOME": str(home), "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy holding only what the build declares."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(out)],
        check=True,
        env=_pip_env(),
        timeout=INSTALL_TIMEOUT,
    )
    (built,) = out.glob("*.whl")
    return built


def floor_constraints(wheel: Path) -> list[str]:
    """``name==floor`` for every unconditional dependency of ``wheel`` that declares a floor."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    pins = []
    for line in lines:
        if not line.startswith("Requires-Dist:") or ";" in line:
            continue  # extras ([test], [bench]) carry a marker
        requirement = line.removeprefix("Requires-Dist:").strip()
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        floor = re.search(r">=\s*([^,;\s]+)", requirement)
        assert name and floor, f"dependency without a floor: {requirement}"
        pins.append(f"{name.group(0)}=={floor.group(1)}")
    return pins


def _venv(wheel: Path, folder: Path, constraints: list[str]) -> Path:
    """A fresh venv in ``folder`` with ``wheel`` installed; returns its ``bin`` directory."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=60)
    command = [str(folder / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)]
    if constraints:
        pins = folder / "floors.txt"
        pins.write_text("\n".join(constraints) + "\n")
        command += ["-c", str(pins)]
    done = subprocess.run(
        command, env=_pip_env(), timeout=INSTALL_TIMEOUT, cwd=folder, capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"pip could not install the wheel {constraints or ''}:\n{done.stderr[-3000:]}")
    return folder / "bin"


@pytest.fixture(scope="module", params=["newest", "floors"])
def venv_bin(
    request: pytest.FixtureRequest, wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The ``bin`` of a venv holding the wheel: newest dependencies, or each pinned to its floor."""
    constraints = floor_constraints(wheel) if request.param == "floors" else []
    return _venv(wheel, tmp_path_factory.mktemp(f"venv-{request.param}"), constraints)


def test_the_wheel_carries_every_file_of_the_packages(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        inside = set(archive.namelist())
    expected = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert expected - inside == set()
    # The data files are among them: the page of frontend_stub, the corpus of tool_service.
    assert {"frontend_stub/static/index.html", "tool_service/corpus/python-gil.md"} <= inside


IMPORT_ALL = """
import importlib, pkgutil, sys
for top in sys.argv[1:]:
    package = importlib.import_module(top)
    assert "site-packages" in package.__file__, package.__file__
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        importlib.import_module(info.name)
print("ok")
"""


def test_every_module_imports_from_the_installed_wheel(venv_bin: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(venv_bin / "python"), "-c", IMPORT_ALL, *PACKAGES],
        cwd=tmp_path,
        env=_bare_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.fixture
def started(venv_bin: Path, tmp_path: Path) -> Iterator[dict[str, tuple[str, subprocess.Popen]]]:
    """Every service of ``agent-gateway serve``, from the venv, each on a free loopback port."""
    running: dict[str, tuple[str, subprocess.Popen]] = {}
    try:
        for name in SERVICES:
            port = free_port()
            log = (tmp_path / f"{name}.log").open("wb")
            process = subprocess.Popen(
                [str(venv_bin / "agent-gateway"), "serve", name, "--port", str(port)],
                cwd=tmp_path,
                env=_bare_env(tmp_path),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            running[name] = (f"http://127.0.0.1:{port}", process)
        yield running
    finally:
        for _, process in running.values():
            process.send_signal(signal.SIGTERM)
        for _, process in running.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _wait_healthy(url: str, process: subprocess.Popen, log: Path) -> httpx.Response:
    """Poll ``url`` until it answers 200; fail with the service's log if it exits or times out."""
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"exited with {process.returncode}:\n{log.read_text()}")
            try:
                response = client.get(url)
            except httpx.TransportError:
                time.sleep(0.1)  # not listening yet: poll again, bounded by the deadline
                continue
            if response.status_code == 200:
                return response
    pytest.fail(f"{url} did not answer 200 in {START_TIMEOUT} s:\n{log.read_text()}")


def test_every_service_starts_from_the_installed_wheel_and_answers_its_health_check(
    started: dict[str, tuple[str, subprocess.Popen]], tmp_path: Path
) -> None:
    for name, (base, process) in started.items():
        _wait_healthy(base + SERVICES[name].health, process, tmp_path / f"{name}.log")
    # The page is package data: served from the installed wheel, not from this checkout.
    base, process = started["frontend_stub"]
    page = _wait_healthy(base + "/", process, tmp_path / "frontend_stub.log")
    assert "<html" in page.text.lower()
    for name, (_, process) in started.items():
        process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal it caught once it has shut down cleanly.
        assert process.wait(timeout=15) in (0, -signal.SIGTERM), name
