"""Pictures of a farm run: Chrome Trace Event JSON and a Gantt chart.

Both read ``FarmStats.trace`` (run the farm with ``trace=True``). The JSON
opens as it is in Perfetto (ui.perfetto.dev) and ``chrome://tracing``: one row
per rank, named ``rank R@host``, one span per task. The chart needs
matplotlib (``pip install matplotlib``, or ``pip install '.[plot]'`` in a
ringmpi checkout).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._outcome import FarmStats, TaskSpan

PLOT_HINT = "pip install matplotlib (or pip install '.[plot]' in a ringmpi checkout)"


def have_matplotlib() -> bool:
    """Return whether matplotlib can be imported."""
    return importlib.util.find_spec("matplotlib") is not None


def chrome_trace(
    stats: FarmStats,
    name: Callable[[int], str] = lambda index: f"task {index}",
    args: Callable[[int], dict[str, Any]] | None = None,
    title: str = "ringmpi farm",
) -> dict[str, Any]:
    """Return the run as a Chrome Trace Event document.

    Args:
        stats: The stats of a traced run.
        name: The span's name for a task index.
        args: Extra arguments shown for a task index.
        title: The process name shown above the rows.

    Returns:
        ``{"traceEvents": [...], "displayTimeUnit": "ms"}``, times in µs.
    """
    events = _rows(stats, title)
    for span in sorted(stats.trace, key=lambda s: (s.rank, s.start)):
        extra = {"task": span.index, "chunk": span.chunk}
        if args is not None:
            extra.update(args(span.index))
        events.append(
            {
                "name": name(span.index),
                "cat": "task",
                "ph": "X",
                "pid": 0,
                "tid": span.rank,
                "ts": _us(span.start),
                "dur": max(_us(span.end) - _us(span.start), 0.0),
                "args": extra,
            }
        )
    for chunk, (rank, dispatched) in sorted(_dispatches(stats.trace).items()):
        events.append(
            {
                "name": f"chunk {chunk} to rank {rank}",
                "cat": "dispatch",
                "ph": "i",
                "s": "t",
                "pid": 0,
                "tid": rank,
                "ts": _us(dispatched),
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def _rows(stats: FarmStats, title: str) -> list[dict[str, Any]]:
    """Metadata events: the process title and one named row per rank."""
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": 0, "tid": 0, "args": {"name": title}}
    ]
    for rank, host in enumerate(stats.hosts):
        idle = " (idle)" if rank in stats.idle_ranks else ""
        name = {"name": f"rank {rank}@{host}{idle}"}
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": rank, "args": name})
        order = {"sort_index": rank}
        events.append(
            {"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": rank, "args": order}
        )
    return events


def write_chrome_trace(path: str | Path, document: dict[str, Any]) -> None:
    """Write a Chrome Trace Event document as JSON."""
    Path(path).write_text(json.dumps(document, indent=None, separators=(",", ":")) + "\n")


def draw_timeline(
    path: str | Path,
    stats: FarmStats,
    name: Callable[[int], str] = lambda index: f"task {index}",
    title: str = "ringmpi farm",
) -> None:
    """Draw the run as a Gantt chart: a row per rank, a bar per task.

    Idle time shows as gaps; small triangles mark when the root handed out
    each chunk; the title gives the speed-up (the tasks' time over the wall
    time) and the efficiency (the speed-up over the computing ranks).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = len(stats.hosts) or 1 + max((s.rank for s in stats.trace), default=0)
    end = max([stats.elapsed, *(s.end for s in stats.trace)])
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.45 * ranks))
    colours = plt.get_cmap("tab20").colors  # type: ignore[attr-defined,unused-ignore]
    for span in stats.trace:
        width = max(span.end - span.start, end * 1e-4)
        ax.broken_barh(
            [(span.start, width)],
            (span.rank - 0.4, 0.8),
            facecolors=colours[span.chunk % len(colours)],
            edgecolor="black",
            linewidth=0.4,
        )
        label = name(span.index)
        if width > end * 0.012 * len(label):
            ax.text(span.start + width / 2, span.rank, label, ha="center", va="center", fontsize=7)
    for _, (rank, dispatched) in _dispatches(stats.trace).items():
        ax.plot([dispatched], [rank - 0.45], marker="v", color="black", markersize=3)
    busy = sum(s.end - s.start for s in stats.trace)
    computing = max(1, len({s.rank for s in stats.trace}))
    speedup = busy / stats.elapsed if stats.elapsed > 0 else 0.0
    ax.set_title(
        f"{title}: {len(stats.trace)} tasks on {ranks} rank{'s' if ranks != 1 else ''}, "
        f"{stats.elapsed:.2f} s; speed-up {speedup:.2f}x, efficiency {speedup / computing:.0%}",
        fontsize=9,
    )
    labels = []
    for rank in range(ranks):
        host = stats.hosts[rank] if rank < len(stats.hosts) else "?"
        labels.append(f"rank {rank}@{host}" + (" (idle)" if rank in stats.idle_ranks else ""))
    ax.set_yticks(range(ranks), labels, fontsize=8)
    ax.set_ylim(ranks - 0.5, -0.5)
    ax.set_xlim(0, end * 1.01 if end > 0 else 1)
    ax.set_xlabel("seconds since the farm began")
    ax.grid(axis="x", linestyle=":", linewidth=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def _dispatches(spans: list[TaskSpan]) -> dict[int, tuple[int, float]]:
    """Each chunk's rank and the time the root handed it out."""
    return {s.chunk: (s.rank, s.dispatched) for s in spans if s.chunk >= 0}
