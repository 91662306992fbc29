"""The fib and ring benchmarks' performance targets, and their table: reported, never asserted."""

from __future__ import annotations

import statistics
from typing import Any


def _row(report: dict[str, Any], workload: str, approach: str) -> dict[str, Any] | None:
    work = report.get("workloads", {}).get(workload)
    if work is None:
        return None
    for row in work["rows"]:
        if row["approach"] == approach and "skipped" not in row:
            return row
    return None


def _at_least(target: str, value: float, limit: float) -> dict[str, Any]:
    return {"target": target, "value": value, "limit": limit, "met": value >= limit}


def _at_most(target: str, value: float, limit: float) -> dict[str, Any]:
    return {"target": target, "value": value, "limit": limit, "met": value <= limit}


def fib_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Check the fib performance targets against a report.

    Speed ratios are ``other.wall_min / farm.wall_min`` (above 1: the farm is
    faster). Targets whose approaches were not run are left out.

    Returns:
        One dict per target: ``target``, ``value``, ``limit``, ``met``.
    """
    out = []

    def speed(workload: str, other: str, limit: float, farm: str = "farm-dynamic") -> None:
        a, b = _row(report, workload, farm), _row(report, workload, other)
        if a is None or b is None:
            return
        value = b["wall_min"] / a["wall_min"]
        out.append(
            _at_least(f"{workload}: {farm} speed / {other} speed >= {limit:g}", value, limit)
        )

    speed("article", "pool", 0.98)
    speed("article", "futures", 1.0)
    speed("uniform", "pool", 1.0)
    speed("tiny", "pool", 0.9)
    speed("tiny", "futures", 3.0)
    row = _row(report, "empty", "farm-dynamic")
    if row is not None:
        target = "empty: farm-dynamic per-task overhead [us] <= 5"
        out.append(_at_most(target, row["per_task_us"], 5.0))
    traced = _row(report, "empty", "farm-trace")
    if row is not None and traced is not None:
        extra = traced["per_task_us"] - row["per_task_us"]
        out.append(_at_most("empty: trace's extra cost per task [us] <= 2", extra, 2.0))
    plain, journaled = _row(report, "tiny", "farm-dynamic"), _row(report, "tiny", "farm-journal")
    if plain is not None and journaled is not None:
        value = 100 * (journaled["wall_min"] / plain["wall_min"] - 1)
        target = "tiny: farm-journal overhead over farm-dynamic [%] <= 3"
        out.append(_at_most(target, value, 3.0))
    plain, journaled = _row(report, "empty", "farm-dynamic"), _row(report, "empty", "farm-journal")
    if plain is not None and journaled is not None:
        value = journaled["per_task_us"] - plain["per_task_us"]
        out.append(_at_most("empty: farm-journal overhead per task [us] <= 20", value, 20.0))
    return out


def ring_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Check the ring performance targets: hop time and 4 MiB bandwidth.

    Returns:
        One dict per target: ``target``, ``value``, ``limit``, ``met``.
    """
    rows = {r["size"]: r for r in report["rows"]}
    out = []
    # Small messages are where the time per hop is latency; single samples
    # there are noisy, so the target takes the median ratio over them.
    small = [r["hop_ratio_ringtest"] for size, r in rows.items() if size <= 4096]
    if small:
        target = "ring buffer hop / ringtest hop <= 1.1 (median over sizes <= 4 KiB)"
        out.append(_at_most(target, statistics.median(small), 1.1))
    worst = max(rows.values(), key=lambda r: r["hop_ratio_ringtest"])
    target = f"ring buffer hop / ringtest hop <= 1.1 at worst ({worst['size']} B)"
    out.append(_at_most(target, worst["hop_ratio_ringtest"], 1.1))
    if 4 << 20 in rows:
        for key, what in (("bw_ratio_pingpong", "pingpong"), ("bw_ratio_pingpong_filled", "")):
            name = what or "pingpong on written buffers"
            target = f"ring buffer bandwidth at 4 MiB / {name} >= 0.9"
            out.append(_at_least(target, rows[4 << 20][key], 0.9))
    return out


def format_targets(targets: list[dict[str, Any]]) -> str:
    """Return the targets as a ``#``-headed table."""
    if not targets:
        return ""
    lines = ["# targets (see BENCHMARKS.md)", f"# {'value':>8} {'met':>4}  target"]
    for t in targets:
        lines.append(f"  {t['value']:>8.3f} {'yes' if t['met'] else 'NO':>4}  {t['target']}")
    return "\n".join(lines)
