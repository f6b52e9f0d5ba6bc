"""``python -m bench --pin CPUS --workers N``: the servers under test on their own CPUs, the load
on the others, and a gateway of several processes measured as a whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.procs import parse_cpus, start_python, wait_port
from bench.run import Placement

pytestmark = pytest.mark.timeout(150)

LAST_CPU = max(os.sched_getaffinity(0))


def test_pin_puts_the_servers_on_the_cpus_given_and_the_load_on_the_others() -> None:
    placement = Placement.of(str(LAST_CPU), workers=2)
    assert placement.servers == {LAST_CPU}
    assert placement.load == (frozenset(os.sched_getaffinity(0)) - {LAST_CPU} or None)
    assert parse_cpus("0-1,1") == {0, 1} or LAST_CPU == 0
    with pytest.raises(ValueError, match="not among"):
        parse_cpus(str(LAST_CPU + 1))


def test_a_pinned_child_runs_on_its_cpus_only() -> None:
    child = start_python("upstream", "bench.upstream", [], cpus={LAST_CPU})
    try:
        wait_port(child.port, child.proc)
        for thread in os.listdir(f"/proc/{child.pid}/task"):
            assert os.sched_getaffinity(int(thread)) == {LAST_CPU}
    finally:
        child.stop()


def test_two_pinned_workers_relay_every_token_and_the_run_says_where_it_ran(
    tmp_path: Path, redis_url: str
) -> None:
    out = tmp_path / "pinned.json"
    subprocess.run(
        [
            *(sys.executable, "-m", "bench", "a", "--smoke", "--paths", "gateway"),
            *("--pin", str(LAST_CPU), "--workers", "2", "--out", str(out)),
        ],
        check=True,
        timeout=140,
        env={**os.environ, "REDIS_URL": redis_url},
        stdout=subprocess.DEVNULL,
    )
    results = json.loads(out.read_text())
    meta = results["meta"]
    assert (meta["workers"], meta["server_cpus"]) == (2, [LAST_CPU])
    assert len(meta["loadavg_before"]) == 3
    for level in results["relay"].values():
        run = level["gateway"]
        assert (run["gaps"], run["duplicates"]) == (0, 0)
        assert run["tokens"] == run["expected_tokens"]
        assert run["server_cpu_us_per_token"] > 0
