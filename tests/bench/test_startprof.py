"""``python -m bench.startprof``: task starts through the gateway in-process, counted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


SIZES = ["--starts", "4", "--wave", "2", "--warm", "2", "--tokens", "3", "--tps", "500"]


def test_starts_are_counted_and_every_token_arrives(redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.startprof", *SIZES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=55,
        env={**os.environ, "REDIS_URL": redis_url},
    )
    assert done.returncode == 0, done.stderr
    figures = dict(re.findall(r"(\w+)=([\d.]+)", done.stdout.splitlines()[-1]))
    assert (
        figures["tokens"] == figures["expected_tokens"] == "24"
    )  # both passes, 4 starts of 3 tokens each
    assert float(figures["calls_per_start"]) > 100  # the profiler saw the gateway's thread
    assert float(figures["cpu_us_per_start"]) > 0
