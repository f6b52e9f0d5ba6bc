"""The CI smoke of ``bench``: tiny sizes, correctness only (no gaps, no duplicates), never speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

SCENARIO_KEYS = {
    "relay": {"direct", "gateway", "react", "naive"},
    "idle": {"direct", "gateway", "naive"},
    "fanout": {"direct", "gateway", "naive"},
    "mirroring": {"streams", "redis", "memory", "redis_over_memory_cpu"},
    "resume": {"direct", "gateway", "naive"},
    "starts": {"5"},
}


def test_the_smoke_run_relays_everything_without_gaps_or_duplicates(
    tmp_path: Path, redis_url: str
) -> None:
    out = tmp_path / "smoke.json"
    subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        check=True,
        timeout=55,
        env={**__import__("os").environ, "REDIS_URL": redis_url},
        stdout=subprocess.DEVNULL,
    )
    results = json.loads(out.read_text())
    assert set(SCENARIO_KEYS) <= set(results)
    assert {"targets", "meta"} <= set(results)
    for level in results["relay"].values():
        assert SCENARIO_KEYS["relay"] <= set(level)
        for name in ("direct", "gateway", "react"):  # react: the ReAct agent, no tool called
            run = level[name]
            assert (run["gaps"], run["duplicates"]) == (0, 0)
            assert run["tokens"] == run["expected_tokens"]
            assert run["finished"] == run["streams"]
    assert SCENARIO_KEYS["idle"] <= set(results["idle"])
    assert results["idle"]["gateway"]["open"] == results["idle"]["gateway"]["connections"]
    fan = results["fanout"]["gateway"]
    assert (fan["gaps"], fan["duplicates"], fan["finished"]) == (0, 0, fan["readers"])
    assert SCENARIO_KEYS["mirroring"] <= set(results["mirroring"])
    for store in ("redis", "memory"):
        run = results["mirroring"][store]
        assert (run["gaps"], run["duplicates"]) == (0, 0)
    resume = results["resume"]["gateway"]
    assert (resume["gaps"], resume["duplicates"]) == (0, 0)
    assert resume["finished"] == resume["clients"]
    herd = resume["herd"]
    assert (herd["gaps"], herd["duplicates"], herd["finished"]) == (0, 0, herd["readers"])
    for level in results["starts"].values():  # f: every start streams all its tokens
        for name in ("direct", "gateway"):
            run = level[name]
            assert (run["gaps"], run["duplicates"], run["stuck"]) == (0, 0, 0)
            assert run["all_finished"] and run["all_tokens"]
            assert run["added_ttft_ms"]["p99"] is not None
        assert level["gateway"]["redis_per_start"]["commands"] > 0
