"""``python -m bench.ab``: two gateways (here one checkout twice) under the relay load, in turn."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


def ab(*args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.ab", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=55,
        env={**os.environ, "REDIS_URL": redis_url},
    )


def test_two_trees_alternate_and_each_gets_its_median(redis_url: str) -> None:
    done = ab(str(REPO), ".", "--streams", "3", "--tokens", "5", "--runs", "2", redis_url=redis_url)
    assert done.returncode == 0, done.stderr
    runs = [line for line in done.stdout.splitlines() if "µs CPU/token, TTFT" in line]
    assert [line.split(":")[0] for line in runs] == [str(REPO), ".", ".", str(REPO)]
    assert all("gaps 0, duplicates 0, stuck 0" in line for line in runs)
    medians = re.findall(r"^(.+): median [\d.]+ µs CPU/token", done.stdout, re.M)
    assert medians == [str(REPO), "."]


def test_a_path_that_is_not_a_checkout_is_refused(tmp_path: Path, redis_url: str) -> None:
    done = ab(str(tmp_path), ".", redis_url=redis_url)
    assert done.returncode == 2 and "not a checkout of this project" in done.stderr
