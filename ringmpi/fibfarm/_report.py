"""What fibfarm prints and draws: the report, the pictures, estimates, a journal's status."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from .. import fib as fibmod
from ..base.errors import RingmpiError
from ..farm import FarmError, FarmStats, FarmTimeout, TaskError
from ..farm import timeline as trace
from ..harness import plural
from ..journal import Summary
from ._tasks import fib_of, subtasks

#: The journal's name for fibfarm's farm function.
FIB_OF = f"{fib_of.__module__}.{fib_of.__qualname__}"
#: A farm item ``(task_index, m)`` as the farm library shows it: ``repr``.
_ITEM_RE = re.compile(r"\((\d+), (\d+)\)")


def duration(seconds: float) -> str:
    for unit, size in (("years", 31557600), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def power(log10: float) -> str:
    """Format ``10**log10`` as ``1.23e+45``, however large (``inf``: past a float)."""
    if math.isinf(log10):
        return "more than 1e+308"
    exponent = math.floor(log10)
    mantissa = round(10 ** (log10 - exponent), 2)
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.2f}e+{exponent:02d}"


def log_duration(log10_seconds: float) -> str:
    if log10_seconds < 15:
        return duration(10**log10_seconds)
    return f"{power(log10_seconds - math.log10(31557600))} years"


def report(tasks, results, stats: FarmStats, baseline, size, args) -> str:
    if args.json:
        doc: dict[str, Any] = {
            "program": "fibfarm",
            "ranks": size,
            "schedule": args.schedule,
            "split": args.split,
            "results": [{"n": n, "fib": v} for n, v in zip(tasks, results)],
            "elapsed": stats.elapsed,
            "root_computes": stats.root_computes,
            "idle_ranks": stats.idle_ranks,
            "workers": [vars(w) for w in stats.workers],
            "verified": bool(args.verify),
            "lost": [vars(lost) for lost in stats.lost],
        }
        if baseline is not None:
            doc.update(sequential=baseline, speedup=baseline / stats.elapsed)
        return json.dumps(doc, indent=2)
    lines = [f"fib({n}) = {v}" for n, v in zip(tasks, results)]
    if args.quiet:
        return "\n".join(lines)
    computing = len(stats.workers)
    ran = {w.rank for w in stats.workers if w.tasks}
    idle = [rank for rank in stats.idle_ranks if rank not in ran]  # a spare may take over
    lines.append(
        f"# {plural(len(tasks), 'task')} on {plural(size, 'rank')}, {computing} computing"
        + (f", {len(idle)} idle (no free core)" if idle else "")
        + f", {args.schedule}"
        + (f", split {args.split}" if args.split else "")
    )
    lines.append(f"# {'rank':>5} {'host':<20} {'tasks':>6} {'busy [s]':>9}")
    gone = {lost.rank for lost in stats.lost}
    for w in stats.workers:
        mark = "  (lost)" if w.rank in gone else ""
        lines.append(f"  {w.rank:>5} {w.host:<20} {w.tasks:>6} {w.busy:>9.3f}{mark}")
    for lost in stats.lost:
        redone = ", ".join(f"fib({tasks[i]})" for i in lost_tasks(lost.requeued, args, tasks))
        lines.append(
            f"lost worker rank {lost.rank}@{lost.host}; redid its tasks on the others: "
            + (redone or "none")
        )
    lines.append(f"elapsed {stats.elapsed:.3f} s")
    if baseline is not None:
        lines.append(
            f"sequential {baseline:.3f} s, speed-up {baseline / stats.elapsed:.2f}x "
            f"on {plural(computing, 'computing rank')}"
        )
    if args.verify:
        lines.append(f"verified {plural(len(tasks), 'result')} against exact Fibonacci")
    lines.append(f"done: {len(results)} of {len(tasks)} results in {stats.elapsed:.3f} s")
    return "\n".join(lines)


def write_pictures(args, tasks: Sequence[int], stats: FarmStats) -> None:
    """Write the trace JSON and the timeline PNG that the arguments ask for."""
    items = subtasks(tasks, args.split)

    def name(index: int) -> str:
        return f"fib({items[index][1]})"

    def extra(index: int) -> dict[str, Any]:
        task, m = items[index]
        value = fibmod.fib_exact(m)
        return {
            "n": m,
            "of task": f"fib({tasks[task]})",
            "result bytes": (value.bit_length() + 7) // 8,
        }

    title = f"fibfarm, {args.schedule}" + (f", split {args.split}" if args.split else "")
    path = args.trace
    try:
        if args.trace:
            trace.write_chrome_trace(args.trace, trace.chrome_trace(stats, name, extra, title))
        path = args.timeline
        if args.timeline:
            trace.draw_timeline(args.timeline, stats, name, title)
    except OSError as exc:
        raise RingmpiError(f"cannot write {path}: {exc.strerror or exc}") from None


def lost_tasks(requeued: list[int], args, tasks) -> list[int]:
    """Map the farm indices a lost worker held back to task indices."""
    items = subtasks(tasks, args.split)
    return sorted({items[i][0] for i in requeued})


def item_name(item: tuple[int, int], tasks: Sequence[int]) -> str:
    """Name a farm item as the user knows it: ``fib(40)``, or ``fib(37) of fib(40)``
    for a sub-call of a split."""
    task, m = item
    return f"fib({m})" if m == tasks[task] else f"fib({m}) of fib({tasks[task]})"


def named(
    exc: FarmError | FarmTimeout, items: Sequence[tuple[int, int]], tasks: Sequence[int]
) -> FarmError | FarmTimeout:
    """Return ``exc`` again with its tasks named ``fib(n)`` instead of as farm items."""
    if isinstance(exc, FarmTimeout):
        # The farm only gives the text: "... task(s) 3 ((3, 40)), 4 ((4, 39)) for ..."
        def shown(match: re.Match[str]) -> str:
            return f"{match[1]} ({item_name(items[int(match[1])], tasks)})"

        return FarmTimeout(re.sub(rf"(\d+) \({_ITEM_RE.pattern}\)", shown, str(exc)))
    errors = []
    for error in exc.errors:
        renamed = TaskError(
            error.index,
            item_name(items[error.index], tasks),
            error.rank,
            error.host,
            error.summary,
            error.remote_traceback,
        )
        renamed.exception = error.exception
        errors.append(renamed)
    return FarmError.of(errors)


def format_status(path: str, summary: Summary) -> str:
    """The text of ``--status``."""
    lines = [
        f"# journal {path}: {summary.identity.describe()}",
        f"done {summary.done}, failed {summary.failed}, missing {summary.missing} "
        f"of {summary.identity.tasks} tasks ({summary.attempts} attempts)",
    ]

    def name(task: str) -> str:
        # fibfarm's journal holds each item's repr; the tasks themselves are not kept.
        match = _ITEM_RE.fullmatch(task)
        return f"fib({match[2]})" if match and summary.identity.function == FIB_OF else task

    if summary.slowest:
        lines.append(f"# slowest {'index':>6} {'seconds':>9} {'rank@host':<20} task")
        for idx, task, seconds, where in summary.slowest:
            lines.append(f"  {'':7} {idx:>6} {seconds:>9.3f} {where or '?':<20} {name(task)}")
    for idx, task, error in summary.errors:
        lines.append(f"failed: task {idx} ({name(task)}): {error}")
    return "\n".join(lines)
