"""``python -m ringmpi.bench engine``: the root's engine at scale, and the cases it exists for.

Workloads, each timed in the same job beside ``mpi4py.futures`` where it has
the same thing:

* ``scale``: 50 tasks per rank that each sleep 10 ms (so oversubscribed ranks
  do not fight for cores), every rank computing (``cores`` = ranks);
  efficiency = ideal time / wall, for ``farm_map``, ``FarmExecutor.map`` and
  ``MPICommExecutor.map``. Run it at 17, 33, 65 and 129 ranks
  (``scripts/bench-engine``).
* ``head-of-line``: 10,000 empty ``submit`` calls and their results, alone and
  while one 2-s task is in flight; the ratio.
* ``cancel``: 5,000 queued tasks of 50 ms, then ``shutdown(cancel_futures=True)``
  (``FarmPool.terminate()``); the seconds it takes.
* ``lone``: one ``submit(...).result()`` at a time of an empty function, and
  of a 1-ms task, beside ``ProcessPoolExecutor(P)`` on rank 0.
* ``memory``: the root's peak memory added by ``farm_map`` of 20,000 tasks of
  50 KB, beside ``multiprocessing.Pool.map`` of the same on rank 0; and by
  1,000,000 tiny tasks from a generator through ``FarmPool.imap_unordered``.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..base import poll
from ..base.limits import usable_cpus
from ..executor import FarmExecutor, FarmPool
from ..farm import farm_map

WORKLOADS = ("scale", "head-of-line", "cancel", "lone", "memory")
SLEEP = 0.01


def sleeper(x: int) -> int:
    time.sleep(SLEEP)
    return x


def empty() -> None:
    return None


def busy_ms() -> None:
    end = time.process_time() + 1e-3
    while time.process_time() < end:
        pass


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def payload(i: int) -> int:
    return i


def size_of(block: bytes) -> int:
    return len(block)


def _rss_reset() -> None:
    """Reset this process's peak resident memory (Linux: /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as out:
            out.write("5")
    except OSError:
        pass


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _peak_added(work: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``work``; return its value and the peak memory it added, in MiB."""
    _rss_reset()
    before = _status_kib("VmRSS")
    value = work()
    return value, (_status_kib("VmHWM") - before) / 1024


def _scale(comm, quick: bool) -> list[dict[str, Any]]:
    size = comm.Get_size()
    n = (2 if quick else 50) * size
    rows = []
    for approach in ("farm-map", "farm-executor", "futures"):
        poll.barrier(comm)
        start = time.perf_counter()
        workers = size
        out = None
        if approach == "farm-map":
            out = farm_map(comm, sleeper, range(n) if comm.Get_rank() == 0 else None, cores=size)
        elif approach == "farm-executor":
            with FarmExecutor(comm, cores=size) as ex:
                if ex is not None:
                    workers = ex.workers
                    out = list(ex.map(sleeper, range(n)))
        else:
            from mpi4py.futures import MPICommExecutor

            workers = size - 1
            mex: Any
            with MPICommExecutor(comm, root=0) as mex:
                if mex is not None:
                    out = list(mex.map(sleeper, range(n)))
        wall = time.perf_counter() - start
        if comm.Get_rank() == 0:
            ideal = n * SLEEP / max(1, workers)
            rows.append(
                {
                    "approach": approach,
                    "workers": workers,
                    "tasks": n,
                    "wall": wall,
                    "efficiency": ideal / wall,
                    "correct": out == list(range(n)),
                }
            )
    return rows


def _executors(comm) -> list[tuple[str, Callable[[], Any]]]:
    def futures() -> Any:
        from mpi4py.futures import MPICommExecutor

        return MPICommExecutor(comm, root=0)

    return [("farm-executor", lambda: FarmExecutor(comm)), ("futures", futures)]


def _head_of_line(comm, quick: bool) -> list[dict[str, Any]]:
    n = 500 if quick else 10_000
    rows = []
    for approach, make in _executors(comm):
        with make() as ex:
            if ex is None:
                continue
            [f.result() for f in [ex.submit(empty) for _ in range(100)]]
            walls = []
            for in_flight in (False, True):
                long = ex.submit(slow, 2.0) if in_flight else None
                start = time.perf_counter()
                [f.result() for f in [ex.submit(empty) for _ in range(n)]]
                walls.append(time.perf_counter() - start)
                if long is not None:
                    long.result()
            rows.append(
                {
                    "approach": approach,
                    "alone_us": walls[0] / n * 1e6,
                    "in_flight_us": walls[1] / n * 1e6,
                    "ratio": walls[1] / walls[0],
                }
            )
    return rows


def _cancel(comm, quick: bool) -> list[dict[str, Any]]:
    n = 200 if quick else 5_000
    rows = []
    for approach, make in _executors(comm):
        with make() as ex:
            if ex is None:
                continue
            futures = [ex.submit(slow, 0.05) for _ in range(n)]
            time.sleep(0.3)
            start = time.perf_counter()
            ex.shutdown(wait=True, cancel_futures=True)
            wall = time.perf_counter() - start
            ran = sum(not f.cancelled() for f in futures)
            rows.append({"approach": approach, "seconds": wall, "ran": ran, "tasks": n})
    with FarmPool(comm) as pool:
        if pool is not None:
            result = pool.map_async(slow, [0.05] * n, chunksize=1)
            time.sleep(0.3)
            start = time.perf_counter()
            pool.terminate()
            wall = time.perf_counter() - start
            rows.append({"approach": "farm-pool-terminate", "seconds": wall, "ran": -1, "tasks": n})
            del result
    return rows


def _lone(comm, quick: bool, processes: int) -> list[dict[str, Any]]:
    n = 50 if quick else 500
    rows = []

    def measure(approach: str, ex: Any) -> None:
        for name, fn in (("empty", empty), ("1 ms", busy_ms)):
            ex.submit(fn).result()
            start = time.perf_counter()
            for _ in range(n):
                ex.submit(fn).result()
            rows.append(
                {"approach": approach, "task": name, "us": (time.perf_counter() - start) / n * 1e6}
            )

    for approach, make in _executors(comm):
        with make() as ex:
            if ex is not None:
                measure(approach, ex)
    if comm.Get_rank() == 0:
        with concurrent.futures.ProcessPoolExecutor(processes) as ppe:
            measure("ppe", ppe)
    poll.barrier(comm)
    return rows


def _memory(comm, quick: bool, processes: int) -> list[dict[str, Any]]:
    n = 200 if quick else 20_000
    rows = []
    rows += _memory_of_tasks(comm, n, processes)
    count = 10_000 if quick else 1_000_000
    with FarmPool(comm) as pool:
        if pool is not None:

            def stream() -> int:
                return sum(1 for _ in pool.imap_unordered(payload, iter(range(count)), 64))

            got, added = _peak_added(stream)
            rows.append({"approach": "farm-pool-imap-unordered", "tasks": count,
                         "added_mib": added, "correct": got == count})  # fmt: skip
    poll.barrier(comm)
    return rows


def _memory_of_tasks(comm, n: int, processes: int) -> list[dict[str, Any]]:
    """The root's peak added by 50-KB tasks through farm_map, and multiprocessing's."""
    if comm.Get_rank() != 0:
        farm_map(comm, size_of, None)
        return []
    blocks = [bytes([i % 251]) * 50_000 for i in range(n)]
    volume = n * 50_000 / 2**20
    rows = []
    out, added = _peak_added(lambda: farm_map(comm, size_of, blocks))
    rows.append({"approach": "farm-map", "volume_mib": volume, "added_mib": added,
                 "correct": out == [50_000] * n})  # fmt: skip
    with multiprocessing.Pool(processes) as mp:
        mp.map(size_of, blocks[:10])
        out, added = _peak_added(lambda: mp.map(size_of, blocks))
    rows.append({"approach": "pool", "volume_mib": volume, "added_mib": added,
                 "correct": out == [50_000] * n})  # fmt: skip
    return rows


def run_benchmark(
    comm,
    names: Sequence[str],
    repeat: int,
    quick: bool = False,
    processes: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Run each workload once per repeat; collective. Returns the report on rank 0."""
    p = processes or len(usable_cpus())
    report: dict[str, Any] = {
        "benchmark": "engine",
        "ranks": comm.Get_size(),
        "processes": p,
        "repeat": repeat,
        "quick": quick,
        "workloads": {},
    }
    run = {
        "scale": lambda: _scale(comm, quick),
        "head-of-line": lambda: _head_of_line(comm, quick),
        "cancel": lambda: _cancel(comm, quick),
        "lone": lambda: _lone(comm, quick, p),
        "memory": lambda: _memory(comm, quick, p),
    }
    for name in names:
        runs = []
        for i in range(repeat if name in ("scale", "head-of-line", "lone") else 1):
            if log is not None and comm.Get_rank() == 0:
                log(f"{name} run {i + 1}")
            runs.append(run[name]())
        if comm.Get_rank() == 0:
            report["workloads"][name] = {"runs": runs}
    poll.barrier(comm)
    return report if comm.Get_rank() == 0 else None


def _best(runs: list[list[dict[str, Any]]], key: str, lower: bool = True) -> list[dict[str, Any]]:
    """Per approach (and task), the run with the best ``key``."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in itertools.chain.from_iterable(runs):
        ident = (row["approach"], row.get("task", ""))
        old = best.get(ident)
        if old is None or (row[key] < old[key]) == lower:
            best[ident] = row
    return list(best.values())


def summary(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The best row of each approach of each workload."""
    keys = {
        "scale": ("efficiency", False),
        "head-of-line": ("ratio", True),
        "cancel": ("seconds", True),
        "lone": ("us", True),
        "memory": ("added_mib", True),
    }
    return {name: _best(work["runs"], *keys[name]) for name, work in report["workloads"].items()}


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The engine's targets; see BENCHMARKS.md."""
    rows = summary(report)
    out = []

    def add(target: str, value: float, limit: float, met: bool) -> None:
        out.append({"target": target, "value": value, "limit": limit, "met": met})

    def find(name: str, approach: str, task: str = "") -> dict[str, Any] | None:
        for row in rows.get(name, []):
            if row["approach"] == approach and row.get("task", "") == task:
                return row
        return None

    for approach in ("farm-map", "farm-executor"):
        row, peer = find("scale", approach), find("scale", "futures")
        if row is not None:
            add(f"scale: {approach} efficiency >= 0.9", row["efficiency"], 0.9,
                row["efficiency"] >= 0.9)  # fmt: skip
            if peer is not None:
                add(f"scale: {approach} efficiency / futures' >= 1",
                    row["efficiency"] / peer["efficiency"], 1.0,
                    row["efficiency"] >= peer["efficiency"])  # fmt: skip
    row = find("head-of-line", "farm-executor")
    if row is not None:
        add("head-of-line: farm-executor in flight / alone <= 1.5", row["ratio"], 1.5,
            row["ratio"] <= 1.5)  # fmt: skip
    for approach in ("farm-executor", "farm-pool-terminate"):
        row = find("cancel", approach)
        if row is not None:
            add(f"cancel: {approach} seconds <= 2", row["seconds"], 2.0, row["seconds"] <= 2.0)
    for task in ("empty", "1 ms"):
        row, peer = find("lone", "farm-executor", task), find("lone", "ppe", task)
        if row is not None and peer is not None:
            value = peer["us"] / row["us"]
            add(f"lone {task}: farm-executor speed / ppe speed >= 1", value, 1.0, value >= 1.0)
    row = find("memory", "farm-map")
    if row is not None:
        limit = 300.0 * row["volume_mib"] / 954
        add(f"memory: farm-map root peak added [MiB] <= {limit:.0f}", row["added_mib"], limit,
            row["added_mib"] <= limit)  # fmt: skip
    return out


def format_report(report: dict[str, Any], quiet: bool = False) -> str:
    """The report as ``#``-headed tables, best run of each approach."""
    rows = summary(report)
    lines = []
    if not quiet:
        lines.append(
            f"# ringmpi.bench engine: {report['ranks']} ranks, P = {report['processes']}, "
            f"best of {report['repeat']}"
        )
    for name, found in rows.items():
        lines.append(f"# {name}")
        for row in found:
            shown = "  ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in row.items()
                if k != "approach"
            )
            lines.append(f"  {row['approach']:<26} {shown}")
    return "\n".join(lines)
