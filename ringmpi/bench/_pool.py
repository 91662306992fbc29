"""``python -m ringmpi.bench pool``: the executor and the pool beside their peers.

Three workloads, each timed under every approach in the same job:

* ``submit``: 10,000 ``submit`` calls of an empty function, then every
  result; the time per task.
* ``map``: 100,000 tiny tasks through ``map``.
* ``emcee``: an emcee run (32 walkers, a log-probability that uses 1 ms of
  CPU, 200 steps) with the approach as its ``pool``; every approach must give
  the same chain.

Pools and executors are started, and warmed with one small call, before the
clock starts; their start-up is not timed. ``pool`` (``multiprocessing``)
runs on rank 0 alone while the other ranks sleep in a barrier.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..base import poll
from ..base.limits import usable_cpus
from ..executor import FarmExecutor, FarmPool

WORKLOADS = ("submit", "map", "emcee")
APPROACHES = {
    "submit": ("farm-executor", "futures"),
    "map": ("farm-pool", "pool", "schwimmbad"),
    "emcee": ("farm-pool", "pool", "schwimmbad", "futures"),
}
DESCRIPTION = {
    "farm-executor": "ringmpi.FarmExecutor(comm).submit on the job's ranks",
    "farm-pool": "ringmpi.FarmPool(comm).map on the job's ranks",
    "futures": "mpi4py.futures.MPICommExecutor(comm, root=0) on the job's ranks",
    "pool": "multiprocessing.Pool(P) on rank 0, the other ranks asleep",
    "schwimmbad": "schwimmbad.MPIPool(comm) on the job's ranks",
}
#: (tasks or steps) per workload: full, quick
SIZES = {"submit": (10_000, 200), "map": (100_000, 2_000), "emcee": (200, 5)}
WALKERS, DIM, LOG_PROB_CPU = 32, 5, 1e-3


class Unavailable(Exception):
    """An approach cannot run here (a package is missing)."""


def empty() -> None:
    return None


def tiny(x: int) -> int:
    return x + 1


def log_prob(theta: np.ndarray) -> float:
    """A Gaussian log-probability that first uses ``LOG_PROB_CPU`` s of CPU."""
    end = time.process_time() + LOG_PROB_CPU
    while time.process_time() < end:
        pass
    return -0.5 * float(np.sum(theta**2))


def _emcee(pool: Any, steps: int) -> np.ndarray:
    import emcee

    rng = np.random.default_rng(1)
    p0 = rng.normal(size=(WALKERS, DIM))
    np.random.seed(1)
    sampler = emcee.EnsembleSampler(WALKERS, DIM, log_prob, pool=pool)
    sampler.run_mcmc(p0, steps, progress=False)
    return sampler.get_chain()


def _work(workload: str, n: int) -> Callable[[Any], Any]:
    """The timed call of ``workload`` for a started pool or executor."""
    if workload == "submit":

        def submit(ex: Any) -> Any:
            futures = [ex.submit(empty) for _ in range(n)]
            return [f.result() for f in futures]

        return submit
    if workload == "map":
        return lambda pool: list(pool.map(tiny, range(n)))
    return lambda pool: _emcee(pool, n)


def _expected(workload: str, n: int) -> Any:
    if workload == "submit":
        return [None] * n
    if workload == "map":
        return [x + 1 for x in range(n)]
    return None  # emcee: every approach must agree with the first


def _timed(pool: Any, work: Callable[[Any], Any], warm: Callable[[Any], Any]):
    from mpi4py import MPI

    warm(pool)
    start = MPI.Wtime()
    value = work(pool)
    return value, MPI.Wtime() - start


def run_approach(comm, approach: str, workload: str, n: int, processes: int):
    """Run one approach once; collective. Returns ``(value, wall)`` on rank 0."""
    work = _work(workload, n)
    small = 4 * comm.Get_size()

    def warm(pool: Any) -> Any:
        if workload == "submit":
            return [f.result() for f in [pool.submit(empty) for _ in range(small)]]
        return list(pool.map(tiny, range(small)))

    out = None
    if approach == "pool":
        if comm.Get_rank() == 0:
            with multiprocessing.Pool(processes) as mp:
                out = _timed(mp, work, warm)
    elif approach == "farm-executor":
        with FarmExecutor(comm) as ex:
            if ex is not None:
                out = _timed(ex, work, warm)
    elif approach == "farm-pool":
        with FarmPool(comm) as pool:
            if pool is not None:
                out = _timed(pool, work, warm)
    elif approach == "futures":
        from mpi4py.futures import MPICommExecutor

        with MPICommExecutor(comm, root=0) as mex:
            if mex is not None:
                out = _timed(mex, work, warm)
    elif approach == "schwimmbad":
        from schwimmbad import MPIPool

        # schwimmbad's workers serve inside the constructor and then call
        # sys.exit; its pool closes again at exit, so it gets a communicator
        # of its own that is never freed.
        private = comm.Dup()
        try:
            spool = MPIPool(private)
        except SystemExit:
            pass
        else:
            out = _timed(spool, work, warm)
            spool.close()
    poll.barrier(comm)
    return out


def _available(approach: str, workload: str) -> str | None:
    import importlib.util

    needs = ["schwimmbad"] if approach == "schwimmbad" else []
    if workload == "emcee":
        needs.append("emcee")
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        return (
            f"needs {' and '.join(missing)}: pip install {' '.join(missing)} "
            "(or pip install '.[bench]' in a ringmpi checkout)"
        )
    return None


def run_benchmark(
    comm,
    names: Sequence[str],
    repeat: int,
    quick: bool = False,
    processes: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Run every approach of every workload ``repeat`` times, in turn; collective.

    Returns:
        On rank 0 the report; None elsewhere.
    """
    rank = comm.Get_rank()
    p = processes or len(usable_cpus())
    report: dict[str, Any] = {
        "benchmark": "pool",
        "ranks": comm.Get_size(),
        "processes": p,
        "repeat": repeat,
        "quick": quick,
        "approaches": DESCRIPTION,
        "workloads": {},
    }
    for name in names:
        n = SIZES[name][1 if quick else 0]
        expected = _expected(name, n)
        walls: dict[str, list[float]] = {a: [] for a in APPROACHES[name]}
        correct: dict[str, bool] = {a: True for a in APPROACHES[name]}
        skipped = {a: _available(a, name) for a in APPROACHES[name]}
        for i in range(repeat):
            for approach in APPROACHES[name]:
                if skipped[approach] is not None:
                    continue
                if log is not None and rank == 0:
                    log(f"{name} {approach} run {i + 1}/{repeat}")
                out = run_approach(comm, approach, name, n, p)
                if rank != 0:
                    continue
                value, wall = out
                walls[approach].append(wall)
                if name == "emcee":
                    if expected is None:
                        expected = value
                    correct[approach] &= bool(np.array_equal(value, expected))
                else:
                    correct[approach] &= value == expected
        if rank == 0:
            rows = _summarize(name, n, walls, correct, skipped)
            report["workloads"][name] = {"n": n, "rows": rows}
    poll.barrier(comm)
    return report if rank == 0 else None


def _summarize(
    name: str,
    n: int,
    walls: dict[str, list[float]],
    correct: dict[str, bool],
    skipped: dict[str, str | None],
) -> list[dict[str, Any]]:
    """One row per approach of workload ``name``: min and median wall, time per task."""
    rows = []
    for approach in APPROACHES[name]:
        row: dict[str, Any] = {"approach": approach}
        if skipped[approach] is not None:
            row["skipped"] = skipped[approach]
        else:
            best = min(walls[approach])
            row.update(
                wall_min=best,
                wall_median=statistics.median(walls[approach]),
                walls=walls[approach],
                per_task_us=best / (n if name != "emcee" else n * WALKERS) * 1e6,
                correct=correct[approach],
            )
        rows.append(row)
    return rows


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The executor and pool targets, from a report; ratios above 1: ours is faster."""
    out = []

    def row(workload: str, approach: str) -> dict[str, Any] | None:
        for r in report["workloads"].get(workload, {}).get("rows", []):
            if r["approach"] == approach and "skipped" not in r:
                return r
        return None

    def speed(workload: str, ours: str, other: str, limit: float) -> None:
        a, b = row(workload, ours), row(workload, other)
        if a is not None and b is not None:
            value = b["wall_min"] / a["wall_min"]
            out.append(
                {
                    "target": f"{workload}: {ours} speed / {other} speed >= {limit:g}",
                    "value": value,
                    "limit": limit,
                    "met": value >= limit,
                }
            )

    r = row("submit", "farm-executor")
    if r is not None:
        out.append(
            {
                "target": "submit: farm-executor per-task time [us] <= 30",
                "value": r["per_task_us"],
                "limit": 30.0,
                "met": r["per_task_us"] <= 30.0,
            }
        )
    speed("submit", "farm-executor", "futures", 1.0)
    speed("map", "farm-pool", "pool", 0.9)
    speed("map", "farm-pool", "schwimmbad", 5.0)
    speed("emcee", "farm-pool", "pool", 0.95)
    speed("emcee", "farm-pool", "schwimmbad", 1.0)
    speed("emcee", "farm-pool", "futures", 1.0)
    return out


def format_report(report: dict[str, Any], quiet: bool = False) -> str:
    """The report as ``#``-headed tables."""
    lines = []
    if not quiet:
        lines.append(
            f"# ringmpi.bench pool: {report['ranks']} ranks, P = {report['processes']}, "
            f"best of {report['repeat']}"
        )
        for name, text in report["approaches"].items():
            lines.append(f"#   {name:<14} {text}")
    for name, work in report["workloads"].items():
        unit = "steps" if name == "emcee" else "tasks"
        lines.append(f"# {name}: {work['n']} {unit}")
        lines.append(
            f"# {'approach':<14} {'min [s]':>9} {'median [s]':>10} {'per task [us]':>13} ok"
        )
        for r in work["rows"]:
            if "skipped" in r:
                lines.append(f"  {r['approach']:<14} skipped: {r['skipped']}")
                continue
            ok = "yes" if r["correct"] else "NO"
            lines.append(
                f"  {r['approach']:<14} {r['wall_min']:>9.4f} {r['wall_median']:>10.4f} "
                f"{r['per_task_us']:>13.2f} {ok}"
            )
    return "\n".join(lines)
