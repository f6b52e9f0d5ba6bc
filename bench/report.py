"""The run's verdicts against the issue's targets, and the table printed at the end."""

from __future__ import annotations

from typing import Any

from bench import starts


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _check(name: str, value: Any, limit: float, *, at_least: bool = False) -> dict[str, Any]:
    met = None if value is None else (value >= limit if at_least else value <= limit)
    return {
        "target": name,
        "value": value,
        "limit": limit,
        "op": ">=" if at_least else "<=",
        "met": met,
    }


def _react_verdicts(relay: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 20: the ReAct agent's answer streams as the relay's does."""
    levels = sorted((level for level in relay if "react" in relay[level]), key=int)
    if not levels:
        return []
    one, top = relay[levels[0]]["react"], relay[levels[-1]]["react"]
    return [
        _check(
            f"a: ReAct added TTFT p99 @{levels[0]} stream (ms)",
            _get(one, "added_ttft_ms", "p99"),
            5,
        ),
        _check(
            f"a: ReAct added token lag p99 @{levels[0]} stream (ms)",
            _get(one, "token_lag_ms", "p99"),
            1,
        ),
        _check(
            f"a: ReAct added token lag p99 @{levels[-1]} streams (ms)",
            _get(top, "token_lag_ms", "p99"),
            10,
        ),
    ]


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue 7 that this run measured."""
    out = []
    relay = results.get("relay") or {}
    levels = sorted(relay, key=int)
    if levels:
        one, top = relay[levels[0]], relay[levels[-1]]
        out.append(
            _check(
                f"a: added TTFT p99 @{levels[0]} stream (ms)",
                _get(one, "gateway", "added_ttft_ms", "p99"),
                5,
            )
        )
        out.append(
            _check(
                f"a: added token lag p99 @{levels[0]} stream (ms)",
                _get(one, "gateway", "token_lag_ms", "p99"),
                1,
            )
        )
        out.append(
            _check(
                f"a: added token lag p99 @{levels[-1]} streams (ms)",
                _get(top, "gateway", "token_lag_ms", "p99"),
                10,
            )
        )
        out.append(
            _check(
                f"a: gateway CPU per token @{levels[-1]} streams (us)",
                _get(top, "gateway", "server_cpu_us_per_token"),
                40,
            )
        )
        for level in levels:
            out.append(
                _check(
                    f"a: naive/gateway CPU per token @{level}",
                    _get(relay[level], "naive_over_gateway_cpu"),
                    3,
                    at_least=True,
                )
            )
        for level in levels:
            for name, label in (("gateway", ""), ("react", " ReAct")):
                g = relay[level].get(name)
                if g is not None:
                    errors = g["gaps"] + g["duplicates"]
                    out.append(_check(f"a:{label} gaps+duplicates @{level}", errors, 0))
        out += _react_verdicts(relay)
    if "idle" in results:
        g = results["idle"]["gateway"]
        out.append(_check("b: idle connections open", g["open"], 10_000, at_least=True))
        out.append(_check("b: RSS per idle connection (KB)", g["rss_per_conn_kb"], 16))
        out.append(
            _check("b: heartbeat lateness max (ms)", _get(g, "heartbeat_late_ms", "max"), 1000)
        )
    if "fanout" in results:
        g = results["fanout"]["gateway"]
        out.append(
            _check("c: fan-out events/s per core", g["events_per_cpu_s"], 40_000, at_least=True)
        )
        out.append(_check("c: gaps+duplicates", g["gaps"] + g["duplicates"], 0))
    if "mirroring" in results:
        out.append(
            _check("d: CPU redis/memory", results["mirroring"]["redis_over_memory_cpu"], 1.15)
        )
    if "resume" in results:
        g = results["resume"]["gateway"]
        out.append(
            _check("e: first replayed event p99 (ms)", _get(g, "first_replayed_ms", "p99"), 50)
        )
        out.append(_check("e: gaps+duplicates", g["gaps"] + g["duplicates"], 0))
        out.append(_check("e: herd all replayed (s)", _get(g, "herd", "all_replayed_s"), 2))
        out.append(
            _check("e: herd gaps+duplicates", g["herd"]["gaps"] + g["herd"]["duplicates"], 0)
        )
    if "starts" in results:
        out += starts.verdicts(results["starts"], _check)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(_fmt(c) for c in cells) + " |"


def table(results: dict[str, Any]) -> str:
    """A Markdown table of the run, one section per scenario, then the verdicts."""
    lines: list[str] = []
    relay = results.get("relay")
    if relay:
        lines += [
            "### a. relay and ReAct (added latency in ms, CPU of the relaying process)",
            "",
            _row(
                [
                    "streams",
                    "path",
                    "TTFT p50",
                    "TTFT p99",
                    "lag p50",
                    "lag p99",
                    "µs CPU/token",
                    "tokens",
                    "gaps",
                    "dups",
                ]
            ),
            "|" + "---|" * 10,
        ]
        for level in sorted(relay, key=int):
            for name in ("direct", "gateway", "react", "naive"):
                r = relay[level].get(name)
                if r is None:
                    continue
                lines.append(
                    _row(
                        [
                            level
                            if r.get("rounds", 1) == 1
                            else f"{level} ({r['rounds']} in turn)",
                            "gateway ReAct" if name == "react" else name,
                            r["added_ttft_ms"]["p50"],
                            r["added_ttft_ms"]["p99"],
                            r["token_lag_ms"]["p50"],
                            r["token_lag_ms"]["p99"],
                            r["server_cpu_us_per_token"],
                            f"{r['tokens']}/{r['expected_tokens']}",
                            r["gaps"],
                            r["duplicates"],
                        ]
                    )
                )
        lines.append("")
    idle = results.get("idle")
    if idle:
        lines += [
            "### b. idle capacity",
            "",
            _row(
                [
                    "path",
                    "open",
                    "KB RSS/conn",
                    "ping late p99 ms",
                    "ping late max ms",
                    "idle CPU %",
                    "ping every s",
                ]
            ),
            "|" + "---|" * 7,
        ]
        for name in ("direct", "gateway", "naive"):
            r = idle[name]
            lines.append(
                _row(
                    [
                        name,
                        r["open"],
                        r["rss_per_conn_kb"],
                        r["heartbeat_late_ms"]["p99"],
                        r["heartbeat_late_ms"]["max"],
                        r["idle_cpu_pct"],
                        r["heartbeat_interval_s"],
                    ]
                )
            )
        lines.append("")
    fan = results.get("fanout")
    if fan:
        lines += [
            "### c. fan-out (one stream, many readers)",
            "",
            _row(
                [
                    "path",
                    "readers",
                    "events",
                    "events/s per core",
                    "lag p50 ms",
                    "lag p99 ms",
                    "gaps",
                    "dups",
                ]
            ),
            "|" + "---|" * 8,
        ]
        for name in ("gateway", "naive"):
            r = fan[name]
            lines.append(
                _row(
                    [
                        name,
                        r["readers"],
                        r["events"],
                        r["events_per_cpu_s"],
                        r["token_lag_ms"]["p50"],
                        r["token_lag_ms"]["p99"],
                        r["gaps"],
                        r["duplicates"],
                    ]
                )
            )
        lines.append("")
    mir = results.get("mirroring")
    if mir:
        lines += [
            "### d. mirroring overhead",
            "",
            _row(["store", "streams", "µs CPU/token", "lag p99 ms"]),
            "|---|---|---|---|",
            _row(
                [
                    "redis",
                    mir["streams"],
                    mir["redis"]["server_cpu_us_per_token"],
                    mir["redis"]["token_lag_ms"]["p99"],
                ]
            ),
            _row(
                [
                    "memory",
                    mir["streams"],
                    mir["memory"]["server_cpu_us_per_token"],
                    mir["memory"]["token_lag_ms"]["p99"],
                ]
            ),
            "",
            f"redis / memory CPU: {_fmt(mir['redis_over_memory_cpu'])} (median runs; every run's"
            f" µs CPU/token, alternately: redis {mir.get('redis_runs_us_per_token')},"
            f" memory {mir.get('memory_runs_us_per_token')})",
            "",
        ]
    res = results.get("resume")
    if res:
        lines += [
            "### e. resume",
            "",
            _row(
                [
                    "path",
                    "clients",
                    "first replayed p50 ms",
                    "p99 ms",
                    "gaps",
                    "dups",
                    "herd",
                    "herd first p99 ms",
                    "herd all replayed s",
                    "herd gaps",
                    "herd dups",
                ]
            ),
            "|" + "---|" * 11,
        ]
        for name in ("gateway", "naive"):
            r = res[name]
            h = r["herd"]
            lines.append(
                _row(
                    [
                        name,
                        r["clients"],
                        r["first_replayed_ms"]["p50"],
                        r["first_replayed_ms"]["p99"],
                        r["gaps"],
                        r["duplicates"],
                        h["readers"],
                        h["first_replayed_ms"]["p99"],
                        h["all_replayed_s"],
                        h["gaps"],
                        h["duplicates"],
                    ]
                )
            )
        lines.append("")
    if results.get("starts"):
        lines += starts.table(results["starts"], _row)
    checks = results.get("targets") or []
    if checks:
        lines += [
            "### targets",
            "",
            _row(["target", "measured", "limit", "met"]),
            "|---|---|---|---|",
        ]
        for c in checks:
            met = {True: "yes", False: "**no**", None: "-"}[c["met"]]
            lines.append(_row([c["target"], c["value"], f"{c['op']} {c['limit']}", met]))
        lines.append("")
    return "\n".join(lines)
