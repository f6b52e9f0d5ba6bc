"""The bench drives the gateway through its public names only (issue 21): a private module or
name it imported could change under it without notice."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _private_gateway_imports(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gateway"):
            module = node.module or ""
            names = [alias.name for alias in node.names]
            if any(part.startswith("_") for part in module.split(".")) or any(
                name.startswith("_") for name in names
            ):
                found.append(f"from {module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            found += [
                f"import {alias.name}"
                for alias in node.names
                if alias.name.startswith("gateway")
                and any(part.startswith("_") for part in alias.name.split("."))
            ]
    return found


def test_the_bench_imports_no_private_module_or_name_of_the_gateway() -> None:
    private = {
        path.name: found
        for path in sorted(BENCH.glob("*.py"))
        if (found := _private_gateway_imports(path.read_text()))
    }
    assert private == {}
