"""The data benchmark: shared read-only data and large results through the farm.

Three parts, every rank calls:

* ``memory``: one array of ``--size`` MiB read by one task per rank, shared
  by ``Farm(shared=...)``, ``multiprocessing.Pool(initializer, initargs)``
  (fork and spawn) and ``mpi4py.futures`` with ``initializer``/``initargs``;
  the memory added is the sum of the proportional set sizes (PSS, shared
  pages split among the processes mapping them) of every process involved,
  taken on the root once every task is done and while the data is still
  held, minus the same sum before (the array already made on the root).
* ``bandwidth``: 32 tasks each return a 64 MiB array (made before timing)
  to the root, beside ``mpi4py.bench pingpong`` at 64 MiB, and raw transfers
  of one 64 MiB array as a plain pickled message and with
  ``mpi4py.util.pkl5`` (ranks 1 -> 0).
* ``shared-work``: tasks that each read the whole shared table and return a
  large array; the table shared once per node, or sent with every task.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..base import poll
from ..farm import farm_imap_unordered, farm_map, shared
from . import _ring as bench_ring
from ._memory import memory_part

PARTS = ("memory", "bandwidth", "shared-work")
MIB = 1 << 20

_STATE: dict[str, Any] = {}


# --- bandwidth ----------------------------------------------------------------------


def _make_result(nbytes: int) -> None:
    _STATE["result"] = np.full(nbytes // 8, float(os.getpid()), dtype=np.float64)


def _result(_task: Any) -> np.ndarray:
    return _STATE["result"]


def _transfer_rate(comm, nbytes: int, rounds: int, how: str) -> float | None:
    """Bytes/s of ``rounds`` sends of one array from rank 1 to rank 0."""
    from mpi4py import MPI
    from mpi4py.util import pkl5

    rank = comm.Get_rank()
    link = pkl5.Intracomm(comm) if how == "pkl5" else comm
    array = np.full(nbytes // 8, 1.5) if rank == 1 else None
    comm.Barrier()
    start = MPI.Wtime()
    for _ in range(rounds):
        if rank == 1:
            link.send(array, dest=0, tag=7)
        elif rank == 0:
            got = link.recv(source=1, tag=7)
            assert got.nbytes == nbytes
    elapsed = MPI.Wtime() - start
    return rounds * nbytes / elapsed if rank == 0 else None


def bandwidth_part(comm, nbytes: int, ntasks: int, repeat: int) -> dict[str, Any] | None:
    """Results of ``nbytes`` reaching the root, beside ping-pong; on rank 0."""
    from mpi4py import MPI

    rank = comm.Get_rank()
    pingpong = nbytes / bench_ring.pingpong_oneway(comm, nbytes, 10, 2) * 1e6
    filled = nbytes / bench_ring.pingpong_filled_oneway(comm, nbytes, 10, 2) * 1e6
    farm_rates, kept_rates, ok = [], [], True
    # Made (and written) on every rank before the clock starts: only the
    # transfers are timed, as in ping-pong.
    _make_result(nbytes)
    options = {"chunksize": 1}
    tasks = range(ntasks) if rank == 0 else None
    for _ in range(repeat):
        # Each result dropped as the next arrives: the root's receive
        # buffers are reused.
        poll.barrier(comm)
        start = MPI.Wtime()
        for _index, value in farm_imap_unordered(comm, _result, tasks, **options):
            ok = ok and value.nbytes == nbytes and bool(value[0] == value[-1])
            del value
        farm_rates.append(ntasks * nbytes / (MPI.Wtime() - start))
        # Every result kept: each lands in memory the process never wrote.
        poll.barrier(comm)
        start = MPI.Wtime()
        kept = farm_map(comm, _result, tasks, **options)
        kept_rates.append(ntasks * nbytes / (MPI.Wtime() - start))
        ok = ok and (rank != 0 or all(v.nbytes == nbytes for v in kept))
        del kept
    pickled = _transfer_rate(comm, nbytes, 8, "pickle")
    pkl5 = _transfer_rate(comm, nbytes, 8, "pkl5")
    if rank != 0:
        return None
    best = max(farm_rates)
    return {
        "result_bytes": nbytes,
        "tasks": ntasks,
        "farm_GBps": best / 1e9,
        "farm_GBps_all": [r / 1e9 for r in farm_rates],
        "farm_kept_GBps": max(kept_rates) / 1e9,
        "pingpong_GBps": pingpong / 1e9,
        "ratio_pingpong": best / pingpong,
        "pingpong_filled_GBps": filled / 1e9,
        "ratio_pingpong_filled": best / filled,
        "pickled_send_GBps": (pickled or 0) / 1e9,
        "pkl5_send_GBps": (pkl5 or 0) / 1e9,
        "correct": ok,
    }


# --- shared work --------------------------------------------------------------------


def _column_sums_shared(k: int) -> np.ndarray:
    return _column_sums(shared()["table"], k)


def _column_sums_sent(task: tuple[int, np.ndarray]) -> np.ndarray:
    k, table = task
    return _column_sums(table, k)


def _column_sums(table: np.ndarray, k: int) -> np.ndarray:
    """Read all of ``table`` (rows x n) and return n values: a large array."""
    return table.sum(axis=0) + k


def shared_work_part(comm, nbytes: int, ntasks: int, repeat: int) -> list[dict[str, Any]] | None:
    """Tasks reading one large table and returning a large array; on rank 0."""
    from mpi4py import MPI

    rank = comm.Get_rank()
    rows_ = 8
    table = None
    if rank == 0:
        table = np.arange(nbytes // 8, dtype=np.float64).reshape(rows_, -1) % 1000.0
    base = table.sum(axis=0) if table is not None else None
    out = []
    for approach in ("farm shared=", "farm, table in every task"):
        walls, ok = [], True
        for _ in range(repeat):
            poll.barrier(comm)
            start = MPI.Wtime()
            if approach == "farm shared=":
                tasks: Any = range(ntasks)
                results = farm_imap_unordered(
                    comm,
                    _column_sums_shared,
                    tasks if rank == 0 else None,
                    shared={"table": table} if rank == 0 else None,
                    chunksize=1,
                )
            else:
                tasks = [(k, table) for k in range(ntasks)] if rank == 0 else None
                results = farm_imap_unordered(comm, _column_sums_sent, tasks, chunksize=1)
            for k, value in results:
                assert base is not None
                ok = ok and bool(np.array_equal(value, base + k))
            walls.append(MPI.Wtime() - start)
        if rank == 0:
            out.append(
                {
                    "approach": approach,
                    "table_bytes": nbytes,
                    "result_bytes": nbytes // rows_,
                    "tasks": ntasks,
                    "wall_min": min(walls),
                    "walls": walls,
                    "correct": ok,
                }
            )
    return out if rank == 0 else None


# --- the driver ---------------------------------------------------------------------


def run_benchmark(
    comm,
    parts: list[str],
    size_mib: int,
    repeat: int,
    quick: bool,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Run the chosen parts; collective. Returns the report on rank 0."""
    rank = comm.Get_rank()
    report: dict[str, Any] = {
        "benchmark": "data",
        "ranks": comm.Get_size(),
        "repeat": repeat,
        "quick": quick,
        "size_mib": size_mib,
    }
    result_bytes = (1 if quick else 64) * MIB
    ntasks = 4 if quick else 32
    for part in parts:
        if log is not None and rank == 0:
            log(f"data {part}")
        start = time.perf_counter()
        if part == "memory":
            report["memory"] = memory_part(comm, size_mib * MIB)
        elif part == "bandwidth":
            report["bandwidth"] = bandwidth_part(comm, result_bytes, ntasks, repeat)
        else:
            report["shared_work"] = shared_work_part(
                comm, (8 if quick else 512) * MIB, 4 if quick else 16, repeat
            )
        if log is not None and rank == 0:
            log(f"data {part}: {time.perf_counter() - start:.1f} s")
    return report if rank == 0 else None


def data_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The data targets: memory of the shared array, bandwidth of results."""
    out = []
    for row in report.get("memory") or []:
        if row["approach"] in ("farm shared=", "FarmExecutor shared=", "FarmPool shared="):
            limit = 1.3 * report["size_mib"]
            out.append(
                {
                    "target": f"{row['approach']} of {report['size_mib']} MiB, {row['processes']} "
                    f"ranks: memory added [MiB] <= {limit:g}",
                    "value": row["pss_added_mib"],
                    "limit": limit,
                    "met": row["pss_added_mib"] <= limit,
                }
            )
    bandwidth = report.get("bandwidth")
    if bandwidth:
        for key, name in (("ratio_pingpong", "pingpong"), ("ratio_pingpong_filled", "")):
            out.append(
                {
                    "target": f"farm results of 64 MiB: bandwidth / "
                    f"{name or 'pingpong on written buffers'} at 64 MiB >= 0.7",
                    "value": bandwidth[key],
                    "limit": 0.7,
                    "met": bandwidth[key] >= 0.7,
                }
            )
    return out


def format_report(report: dict[str, Any], quiet: bool = False) -> str:
    """Return the fixed-width, ``#``-headed tables of a data report."""
    lines = []
    if not quiet:
        lines.append(
            f"# ringmpi.bench data: {report['ranks']} MPI ranks, {report['repeat']} run(s)"
            + (" (quick: results checked, timings not compared)" if report["quick"] else "")
        )
    if report.get("memory"):
        lines.append(f"# memory: one {report['size_mib']} MiB array, one task per process")
        lines.append(f"# {'approach':<26} {'procs':>5} {'PSS added':>10} {'used added':>10} ok")
        for row in report["memory"]:
            lines.append(
                f"  {row['approach']:<26} {row['processes']:>5} "
                f"{row['pss_added_mib']:>6.0f} MiB {row['used_added_mib']:>6.0f} MiB "
                f"{'yes' if row['correct'] else 'NO'}"
            )
    bandwidth = report.get("bandwidth")
    if bandwidth:
        size = bandwidth["result_bytes"] // MIB
        lines.append(f"# bandwidth: {bandwidth['tasks']} tasks each returning {size} MiB")
        lines.append(
            f"  farm {bandwidth['farm_GBps']:.2f} GB/s (each result dropped as the next comes), "
            f"{bandwidth.get('farm_kept_GBps', 0):.2f} GB/s (all kept)\n"
            f"  pingpong {bandwidth['pingpong_GBps']:.2f}"
            f" GB/s (ratio {bandwidth['ratio_pingpong']:.2f}), pingpong on written buffers "
            f"{bandwidth['pingpong_filled_GBps']:.2f} GB/s (ratio "
            f"{bandwidth['ratio_pingpong_filled']:.2f})\n  one {size} MiB array 1->0: pickled "
            f"{bandwidth['pickled_send_GBps']:.2f} GB/s, pkl5 {bandwidth['pkl5_send_GBps']:.2f}"
            f" GB/s {'ok' if bandwidth['correct'] else 'WRONG'}"
        )
    if report.get("shared_work"):
        first = report["shared_work"][0]
        lines.append(
            f"# shared-work: {first['tasks']} tasks each read a {first['table_bytes'] // MIB} MiB "
            f"table and return {first['result_bytes'] // MIB} MiB"
        )
        for row in report["shared_work"]:
            lines.append(
                f"  {row['approach']:<26} {row['wall_min']:>8.3f} s "
                f"{'ok' if row['correct'] else 'WRONG'}"
            )
    return "\n".join(lines)
