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
    for rank, label in enumerate(row_labels(stats)):
        name = {"name": label}
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": rank, "args": name})
        order = {"sort_index": rank}
        events.append(
            {"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": rank, "args": order}
        )
    return events


def row_labels(stats: FarmStats) -> list[str]:
    """Name each rank's row: ``rank R@host``, and what became of it.

    ``(lost)``: the rank died during a fault-tolerant run; ``(idle)``: it had
    no free core and ran nothing; ``(spare)``: kept idle at first, it took over
    from a lost worker.
    """
    ranks = len(stats.hosts) or 1 + max((s.rank for s in stats.trace), default=0)
    ran = {s.rank for s in stats.trace} | {w.rank for w in stats.workers if w.tasks}
    lost = {w.rank for w in stats.lost}
    labels = []
    for rank in range(ranks):
        host = stats.hosts[rank] if rank < len(stats.hosts) else "?"
        label = f"rank {rank}@{host}"
        if rank in lost:
            label += " (lost)"
        elif rank in stats.idle_ranks:
            label += " (spare)" if rank in ran else " (idle)"
        labels.append(label)
    return labels


def write_chrome_trace(path: str | Path, document: dict[str, Any]) -> None:
    """Write a Chrome Trace Event document as JSON."""
    Path(path).write_text(json.dumps(document, indent=None, separators=(",", ":")) + "\n")


#: Most task bars that get a text label: beyond, labels cost more than they tell.
MAX_LABELS = 400
#: Formats the chart may be written in, by the path's suffix (none: PNG).
FORMATS = ("png", "svg", "pdf")


def timeline_format(path: str | Path) -> str:
    """Return the format a timeline at ``path`` is written in: its suffix, or PNG.

    Raises:
        ValueError: The path ends in a suffix that is none of ``FORMATS``.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    if suffix not in FORMATS:
        raise ValueError(
            f"cannot draw a timeline as .{suffix}: give a path ending in "
            f"{', '.join('.' + f for f in FORMATS)}, or no suffix for PNG"
        )
    return suffix


def draw_timeline(
    path: str | Path,
    stats: FarmStats,
    name: Callable[[int], str] = lambda index: f"task {index}",
    title: str = "ringmpi farm",
) -> None:
    """Draw the run as a Gantt chart: a row per rank, a bar per task.

    Idle time shows as gaps; small triangles mark when the root handed out
    each chunk; the title gives the speed-up (the tasks' time over the wall
    time) and the efficiency (the speed-up over the computing ranks). The
    chart is written at ``path`` exactly, as its suffix says (PNG without one).
    Each row is one collection, so a run of 200,000 tasks draws in seconds.

    Raises:
        ValueError: ``path`` has a suffix that is not a format it can write.
        OSError: The file could not be written.
    """
    fmt = timeline_format(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = row_labels(stats)
    ranks = len(labels)
    end = max([stats.elapsed, *(s.end for s in stats.trace)])
    many = len(stats.trace) > MAX_LABELS
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.45 * ranks))
    try:
        colours = plt.get_cmap("tab20").colors  # type: ignore[attr-defined,unused-ignore]
        rows: dict[int, tuple[list[tuple[float, float]], list[Any]]] = {}
        for span in stats.trace:
            width = max(span.end - span.start, end * 1e-4)
            bars, faces = rows.setdefault(span.rank, ([], []))
            bars.append((span.start, width))
            faces.append(colours[span.chunk % len(colours)])
            label = "" if many else name(span.index)
            if label and width > end * 0.012 * len(label):
                mid = span.start + width / 2
                ax.text(mid, span.rank, label, ha="center", va="center", fontsize=7)
        for rank, (bars, faces) in rows.items():
            ax.broken_barh(
                bars,
                (rank - 0.4, 0.8),
                facecolors=faces,
                edgecolor="black",
                linewidth=0.0 if many else 0.4,
            )
        dispatches = list(_dispatches(stats.trace).values())
        if dispatches:
            ax.plot(
                [t for _, t in dispatches],
                [rank - 0.45 for rank, _ in dispatches],
                linestyle="none",
                marker="v",
                color="black",
                markersize=3,
            )
        for lost in stats.lost:
            if lost.rank < ranks:
                ax.axhspan(lost.rank - 0.5, lost.rank + 0.5, color="red", alpha=0.08)
        busy = sum(s.end - s.start for s in stats.trace)
        computing = max(1, len({s.rank for s in stats.trace}))
        speedup = busy / stats.elapsed if stats.elapsed > 0 else 0.0
        ax.set_title(
            f"{title}: {len(stats.trace)} tasks on {ranks} rank{'s' if ranks != 1 else ''}, "
            f"{stats.elapsed:.2f} s; speed-up {speedup:.2f}x, "
            f"efficiency {speedup / computing:.0%}",
            fontsize=9,
        )
        ax.set_yticks(range(ranks), labels, fontsize=8)
        ax.set_ylim(ranks - 0.5, -0.5)
        ax.set_xlim(0, end * 1.01 if end > 0 else 1)
        ax.set_xlabel("seconds since the farm began")
        ax.grid(axis="x", linestyle=":", linewidth=0.5)
        fig.tight_layout()
        # An open file, not a name: matplotlib would add ".png" to a name
        # without a suffix, and write somewhere else than asked.
        with open(path, "wb") as out:
            fig.savefig(out, format=fmt, dpi=110)
    finally:
        plt.close(fig)


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def _dispatches(spans: list[TaskSpan]) -> dict[int, tuple[int, float]]:
    """Each chunk's rank and the time the root handed it out."""
    return {s.chunk: (s.rank, s.dispatched) for s in spans if s.chunk >= 0}
