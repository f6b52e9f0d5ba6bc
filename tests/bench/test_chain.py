"""``python -m bench.chain``: the relay's per-token chain in one process, on both stores."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


def chain(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.chain", "--streams", "3", "--tokens", "7", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=55,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_every_token_reaches_its_reader_and_each_run_reports_its_cost(
    store: str, redis_url: str
) -> None:
    extra = ["--redis"] if store == "redis" else []
    done = chain("--runs", "3", *extra, REDIS_URL=redis_url)
    assert done.returncode == 0, done.stderr
    found = re.fullmatch(
        rf"{store}: median ([\d.]+), best ([\d.]+) µs CPU/token over \[(.+)\]\n", done.stdout
    )
    assert found is not None, done.stdout
    runs = [float(x) for x in found.group(3).split(", ")]
    assert len(runs) == 3 and all(r > 0 for r in runs)
    assert float(found.group(2)) == min(runs)
