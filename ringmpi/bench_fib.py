"""The Fibonacci benchmark: the same tasks under every way to run Python in parallel."""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import multiprocessing
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import fib as fibmod
from . import fibfarm, poll
from .farm import balance
from .farm._plan import usable_cpus

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
#: Levels of unfolding for ``farm-split``.
SPLIT_DEPTH = 3

WORKLOAD_NAMES = ("article", "uniform", "tiny", "empty")
TINY_SEED = 20261125

C_SOURCE = """\
/* The article's slow Fibonacci, in C: naive recursion, base case n <= 2. */
#ifdef RINGMPI_COUNT_CALLS
long long ringmpi_fib_calls = 0;
#endif

long long ringmpi_fib(int n)
{
#ifdef RINGMPI_COUNT_CALLS
    ringmpi_fib_calls++;
#endif
    if (n <= 2)
        return 1;
    return ringmpi_fib(n - 1) + ringmpi_fib(n - 2);
}
"""


class Unavailable(Exception):
    """An approach cannot run here; the message says why."""


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


# --- the C kernel ----------------------------------------------------------------


def find_compiler(environ: dict[str, str] | None = None) -> str | None:
    """Return the C compiler command: ``$CC``, else ``cc`` or ``gcc`` on PATH."""
    env = os.environ if environ is None else environ
    if env.get("CC"):
        return env["CC"]
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def build_c_kernel(
    directory: str | os.PathLike[str], compiler: str | None = None, count_calls: bool = False
) -> Path:
    """Compile ``C_SOURCE`` into a shared library in ``directory``.

    Args:
        directory: Where the source and the library are written.
        compiler: The compiler command (default ``find_compiler()``).
        count_calls: Build the variant that counts its calls in the global
            ``ringmpi_fib_calls`` (for tests; the benchmark's kernel does not).

    Returns:
        The path of the shared library.

    Raises:
        Unavailable: No compiler, or it failed.
    """
    compiler = compiler or find_compiler()
    if compiler is None:
        raise Unavailable("no C compiler (set CC, or install cc/gcc) to build the C kernel")
    src = Path(directory) / "ringmpi_fib.c"
    lib = Path(directory) / "ringmpi_fib.so"
    src.write_text(C_SOURCE)
    argv = [*shlex.split(compiler), "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)]
    if count_calls:
        argv.insert(-1, "-DRINGMPI_COUNT_CALLS")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"the C compiler {compiler!r} could not run: {exc}") from None
    if done.returncode != 0:
        raise Unavailable(
            f"the C compiler failed ({shlex.join(argv)}): {done.stderr.strip()[:300]}"
        )
    return lib


def load_c_kernel(lib: str | os.PathLike[str]) -> Callable[[int], int]:
    """Load the compiled kernel; calls through ctypes release the GIL."""
    dll = ctypes.CDLL(str(lib))
    kernel = dll.ringmpi_fib
    kernel.argtypes = [ctypes.c_int]
    kernel.restype = ctypes.c_longlong
    return kernel


# --- the approaches that run on rank 0 alone ---------------------------------------


def _noop(x: Any) -> Any:
    return x


CHILD_CODE = (
    "import json, sys\n"
    "from ringmpi.fib import fib\n"
    "print(json.dumps([fib(int(n)) for n in sys.stdin.read().split()]))\n"
)


def run_children(tasks: Sequence[int], processes: int) -> list[int]:
    """Start ``processes`` independent Python children, each computing its share.

    Shares are balanced by cost (largest task to the least loaded child), as
    a parent that knows its tasks would split them; the children start,
    compute and print their results as JSON, which the parent reads.
    """
    shares = balance(len(tasks), processes, [fibmod.calls(n) for n in tasks])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    children = []
    for share in shares:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdin is not None
        child.stdin.write(" ".join(str(tasks[i]) for i in share))
        child.stdin.close()
        children.append(child)
    results: list[int] = [0] * len(tasks)
    for share, child in zip(shares, children):
        assert child.stdout is not None
        values = json.loads(child.stdout.read())
        if child.wait() != 0:
            raise RuntimeError(f"a child exited with status {child.returncode}")
        for i, value in zip(share, values):
            results[i] = value
    return results


class LocalRunner:
    """Runs the approaches that need no MPI, on rank 0, with pools kept warm."""

    def __init__(self, processes: int, workdir: str):
        self.processes = processes
        self.workdir = workdir
        self._pool: Any = None
        self._ppe: concurrent.futures.ProcessPoolExecutor | None = None
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._kernel: Callable[[int], int] | None = None
        self._kernel_error: str | None = None

    def prepare(self, approach: str) -> Callable[[list[int]], list[int]]:
        """Start (once) what ``approach`` needs; return the timed call.

        Raises:
            Unavailable: The approach cannot run here.
        """
        p = self.processes
        if approach == "sequential":
            return lambda tasks: [fibmod.fib(n) for n in tasks]
        if approach == "pool":
            if self._pool is None:
                self._pool = multiprocessing.Pool(p)
                self._pool.map(_noop, range(4 * p))
            return lambda tasks: self._pool.map(fibmod.fib, tasks)
        if approach == "ppe":
            if self._ppe is None:
                self._ppe = concurrent.futures.ProcessPoolExecutor(p)
                list(self._ppe.map(_noop, range(4 * p)))
            ppe = self._ppe
            return lambda tasks: list(ppe.map(fibmod.fib, tasks))
        if approach == "children":
            return lambda tasks: run_children(tasks, p)
        kernel = self._c_kernel()
        if approach == "c-sequential":
            return lambda tasks: [kernel(n) for n in tasks]
        if approach == "c-threads":
            if self._threads is None:
                self._threads = concurrent.futures.ThreadPoolExecutor(p)
                list(self._threads.map(kernel, range(4 * p)))
            threads = self._threads
            return lambda tasks: list(threads.map(kernel, tasks))
        raise ValueError(f"not a local approach: {approach}")

    def _c_kernel(self) -> Callable[[int], int]:
        if self._kernel is None and self._kernel_error is None:
            try:
                self._kernel = load_c_kernel(build_c_kernel(self.workdir))
            except Unavailable as exc:
                self._kernel_error = str(exc)
        if self._kernel is None:
            raise Unavailable(self._kernel_error or "the C kernel is unavailable")
        return self._kernel

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
        if self._ppe is not None:
            self._ppe.shutdown()
        if self._threads is not None:
            self._threads.shutdown()


# --- the approaches on every rank ---------------------------------------------------


def run_mpi_approach(comm, approach: str, tasks: list[int] | None):
    """Run one MPI approach on every rank; collective.

    Returns:
        On rank 0 ``(results, wall, workers, root_cpu)`` in seconds; None elsewhere.
    """
    from mpi4py import MPI

    rank = comm.Get_rank()
    if approach == "futures":
        from mpi4py.futures import MPICommExecutor

        out = None
        with MPICommExecutor(comm, root=0) as pool:
            if pool is not None:
                # mpi4py's stubs type the entered executor as MPICommExecutor;
                # it is an MPIPoolExecutor.
                executor: Any = pool
                list(executor.map(_noop, range(4 * comm.Get_size())))
                assert tasks is not None
                cpu, start = time.process_time(), MPI.Wtime()
                results = list(executor.map(fibmod.fib, tasks))
                wall, cpu = MPI.Wtime() - start, time.process_time() - cpu
                out = (results, wall, max(1, comm.Get_size() - 1), cpu)
        return out
    journal = None
    if approach == "farm-journal":
        # Only the root's path is used; a fresh journal for every run.
        folder = tempfile.mkdtemp(prefix="ringmpi-journal-") if rank == 0 else ""
        journal = os.path.join(folder, "bench.db")
    cpu, start = time.process_time(), MPI.Wtime()
    done = fibfarm.run(
        comm,
        tasks if rank == 0 else None,
        schedule="static" if approach == "farm-static" else "dynamic",
        split=SPLIT_DEPTH if approach == "farm-split" else 0,
        trace=approach == "farm-trace",
        journal=journal,
    )
    wall, cpu = MPI.Wtime() - start, time.process_time() - cpu
    if journal is not None and rank == 0:
        shutil.rmtree(os.path.dirname(journal), ignore_errors=True)
    if done is None:
        return None
    results, stats = done
    return results, wall, len(stats.workers), cpu


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
