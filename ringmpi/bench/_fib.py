"""The Fibonacci benchmark: the same tasks under every way to run Python in parallel."""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import fib as fibmod
from ..base import poll
from ..base.limits import usable_cpus
from ._local import (
    LocalRunner,
    Unavailable,
)
from ._mpi import run_mpi_approach

#: Approaches in the order they run and are shown.
APPROACHES = (
    "sequential",
    "pool",
    "ppe",
    "children",
    "c-sequential",
    "c-threads",
    "futures",
    "farm-dynamic",
    "farm-static",
    "farm-split",
    "farm-trace",
    "farm-journal",
)
#: Approaches that need every rank; the others run on rank 0 alone.
MPI_APPROACHES = (
    "futures",
    "farm-dynamic",
    "farm-static",
    "farm-split",
    "farm-trace",
    "farm-journal",
)
#: What each approach's speed-up is measured against.
BASELINE = {"c-threads": "c-sequential"}
DESCRIPTION = {
    "sequential": "one Python process, a plain loop",
    "pool": "multiprocessing.Pool(P).map, pool started and warmed before timing",
    "ppe": "concurrent.futures.ProcessPoolExecutor(P).map, started and warmed before timing",
    "children": "parent starts P 'python -c' children, each computes its share (start-up included)",
    "c-sequential": "the C kernel (ctypes) in one thread",
    "c-threads": "P threads calling the C kernel (ctypes releases the GIL)",
    "futures": "mpi4py.futures.MPICommExecutor(comm, root=0).map on the job's ranks",
    "farm-dynamic": "ringmpi fibfarm, dynamic (workers pull chunks)",
    "farm-static": "ringmpi fibfarm, static scatter/gather of balanced shares",
    "farm-split": "ringmpi fibfarm, dynamic, each fib(n) split 3 levels",
    "farm-trace": "ringmpi fibfarm, dynamic, with trace=True (one span per task)",
    "farm-journal": "ringmpi fibfarm, dynamic, every result journaled (a fresh SQLite journal)",
}

WORKLOAD_NAMES = ("article", "uniform", "tiny", "empty")
TINY_SEED = 20261125


def workloads(quick: bool = False) -> dict[str, list[int]]:
    """Return the task lists by name: full size, or tiny for ``quick``.

    ``article`` is the article's 38..33; ``uniform`` five each of 25..32;
    ``tiny`` many small tasks (seeded, so every run has the same); ``empty``
    tasks of ``fib(1)``, one call that returns at once, for per-task overhead.
    """
    rng = random.Random(TINY_SEED)
    if quick:
        return {
            "article": [22, 21, 20, 19, 18, 17],
            "uniform": [n for n in range(12, 16) for _ in range(2)],
            "tiny": [rng.randint(5, 10) for _ in range(40)],
            "empty": [1] * 50,
        }
    return {
        "article": [38, 37, 36, 35, 34, 33],
        "uniform": [n for n in range(25, 33) for _ in range(5)],
        "tiny": [rng.randint(15, 20) for _ in range(1000)],
        "empty": [1] * 2000,
    }


# --- statistics ----------------------------------------------------------------


@dataclass
class Outcome:
    """The runs of one approach on one workload, as seen by rank 0."""

    approach: str
    workers: int = 0
    walls: list[float] = field(default_factory=list)
    root_cpu: list[float] = field(default_factory=list)
    rank_cpu: list[list[float]] = field(default_factory=list)
    correct: bool = True
    skipped: str | None = None

    @property
    def wall_min(self) -> float:
        return min(self.walls)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.walls)


def summarize(outcomes: dict[str, Outcome], ntasks: int) -> list[dict[str, Any]]:
    """Turn the runs into rows: min and median wall, speed-up, efficiency.

    Speed-up is the baseline's minimum over the approach's minimum (the
    baseline is ``sequential``, or ``c-sequential`` for ``c-threads``);
    parallel efficiency is the speed-up divided by the processes or threads
    computing.

    Args:
        outcomes: Runs by approach name.
        ntasks: Tasks in the workload, for the time per task.

    Returns:
        One dict per approach, in the order of ``outcomes``.
    """
    rows = []
    for name, out in outcomes.items():
        row: dict[str, Any] = {"approach": name, "workers": out.workers}
        if out.skipped is not None or not out.walls:
            row["skipped"] = out.skipped or "not run"
            rows.append(row)
            continue
        base_name = BASELINE.get(name, "sequential")
        base = outcomes.get(base_name)
        speedup = None
        if base is not None and base.walls and base.skipped is None:
            speedup = base.wall_min / out.wall_min
        row.update(
            wall_min=out.wall_min,
            wall_median=out.wall_median,
            walls=list(out.walls),
            baseline=base_name,
            speedup=speedup,
            efficiency=(speedup / out.workers) if speedup is not None and out.workers else None,
            per_task_us=out.wall_min / ntasks * 1e6 if ntasks else None,
            root_cpu_pct=100 * statistics.median(c / w for c, w in zip(out.root_cpu, out.walls)),
            rank_cpu_s=out.rank_cpu,
            correct=out.correct,
        )
        rows.append(row)
    return rows


# --- the driver ---------------------------------------------------------------------


def run_benchmark(
    comm,
    names: Sequence[str],
    approaches: Sequence[str],
    repeat: int,
    quick: bool = False,
    processes: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Run every approach on every workload ``repeat`` times; collective.

    Repeats go round all approaches in turn, so that noise from other work on
    the machine spreads over them rather than hitting one. While rank 0 runs
    an approach without MPI, the other ranks wait in a barrier that sleeps
    instead of spinning, so they take no core from it.

    Args:
        comm: The communicator; every rank calls.
        names: Workloads to run (see ``workloads``).
        approaches: Approaches to run (see ``APPROACHES``).
        repeat: Timed runs of each approach on each workload.
        quick: Use the tiny inputs.
        processes: P for pools, children and threads (default: the cores).
        log: Called on rank 0 with a line of progress.

    Returns:
        On rank 0 the report (see ``main``); None elsewhere.
    """

    rank = comm.Get_rank()
    p = processes or len(usable_cpus())
    tasks_by_name = workloads(quick)
    report: dict[str, Any] = {
        "benchmark": "fib",
        "ranks": comm.Get_size(),
        "processes": p,
        "repeat": repeat,
        "quick": quick,
        "approaches": {a: DESCRIPTION[a] for a in approaches},
        "workloads": {},
    }
    with tempfile.TemporaryDirectory(prefix="ringmpi-bench-") as workdir:
        local = LocalRunner(p, workdir) if rank == 0 else None
        try:
            for name in names:
                tasks = tasks_by_name[name]
                outcomes = _run_workload(comm, name, tasks, approaches, repeat, local, p, log)
                if rank == 0:
                    report["workloads"][name] = {
                        "tasks": len(tasks),
                        "n": _describe_tasks(tasks),
                        "rows": summarize(outcomes, len(tasks)),
                    }
        finally:
            if local is not None:
                local.close()
    poll.barrier(comm)
    return report if rank == 0 else None


def _run_workload(
    comm,
    name: str,
    tasks: list[int],
    approaches: Sequence[str],
    repeat: int,
    local: LocalRunner | None,
    p: int,
    log: Callable[[str], None] | None,
) -> dict[str, Outcome]:
    """Run every approach on one workload ``repeat`` times, in turn; collective."""
    rank = comm.Get_rank()
    expected = [fibmod.fib_exact(n) for n in tasks]
    outcomes = {a: Outcome(a) for a in approaches}
    for i in range(repeat):
        for approach in approaches:
            out = outcomes[approach]
            if out.skipped is not None:
                continue
            if log is not None and rank == 0:
                log(f"{name} {approach} run {i + 1}/{repeat}")
            _one_run(comm, approach, tasks, expected, out, local, p)
    return outcomes


def _one_run(comm, approach, tasks, expected, out: Outcome, local, p) -> None:
    from mpi4py import MPI

    rank = comm.Get_rank()
    poll.barrier(comm)
    cpu0 = time.process_time()
    result = None
    if approach in MPI_APPROACHES:
        result = run_mpi_approach(comm, approach, tasks if rank == 0 else None)
    elif rank == 0:
        try:
            call = local.prepare(approach)
        except Unavailable as exc:
            out.skipped = str(exc)
        else:
            cpu, start = time.process_time(), MPI.Wtime()
            values = call(tasks)
            workers = 1 if approach in ("sequential", "c-sequential") else p
            result = (values, MPI.Wtime() - start, workers, time.process_time() - cpu)
    # Non-MPI approaches: the other ranks sleep here until rank 0 is done.
    poll.barrier(comm)
    cpu = comm.gather(time.process_time() - cpu0, root=0)
    skipped = comm.bcast(out.skipped if rank == 0 else None, root=0)
    out.skipped = skipped
    if rank != 0 or skipped is not None:
        return
    assert result is not None and cpu is not None
    values, wall, workers, root_cpu = result
    out.walls.append(wall)
    out.workers = workers
    out.root_cpu.append(root_cpu)
    out.rank_cpu.append(cpu)
    out.correct = out.correct and list(values) == expected


def _describe_tasks(tasks: Sequence[int]) -> str:
    if len(set(tasks)) == 1:
        return f"{len(tasks)} x {tasks[0]}"
    if len(tasks) <= 8:
        return " ".join(map(str, tasks))
    return f"{len(tasks)} tasks, n in {min(tasks)}..{max(tasks)}"


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def format_report(report: dict[str, Any], quiet: bool = False) -> str:
    """Return the fixed-width, ``#``-headed table of a fib report."""
    lines = []
    if not quiet:
        lines.append(
            f"# ringmpi.bench fib: {report['ranks']} MPI ranks, P = {report['processes']} "
            f"for pools/children/threads, {_runs(report['repeat'])} each"
            + (" (quick: results checked, timings not compared)" if report["quick"] else "")
        )
    for name, work in report["workloads"].items():
        lines.append(f"# workload {name}: {work['n']}")
        lines.append(
            f"# {'approach':<13} {'P':>3} {'min [s]':>9} {'median [s]':>10} "
            f"{'speed-up':>8} {'effic.':>6} {'per task [us]':>13} {'root cpu%':>9} {'ok':>3}"
        )
        for row in work["rows"]:
            if "skipped" in row:
                lines.append(f"  {row['approach']:<13} skipped: {row['skipped']}")
                continue
            speedup = "-" if row["speedup"] is None else f"{row['speedup']:.3f}"
            if row["baseline"] != "sequential" and row["speedup"] is not None:
                speedup += "c"
            effic = "-" if row["efficiency"] is None else f"{row['efficiency']:.2f}"
            lines.append(
                f"  {row['approach']:<13} {row['workers']:>3} {row['wall_min']:>9.4f} "
                f"{row['wall_median']:>10.4f} {speedup:>8} {effic:>6} "
                f"{row['per_task_us']:>13.1f} {row['root_cpu_pct']:>9.0f} "
                f"{'yes' if row['correct'] else 'NO':>3}"
            )
    if any(
        r.get("baseline") == "c-sequential" for w in report["workloads"].values() for r in w["rows"]
    ):
        lines.append("# c: speed-up over c-sequential (the C kernel in one thread)")
    return "\n".join(lines)
