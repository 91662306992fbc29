"""The data benchmark's memory part: one array shared by each approach, side by side."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import numpy as np

from ..base import poll
from ..farm import Farm, shared

_STATE: dict[str, Any] = {}


def pss_kib(pid: int) -> int:
    """Proportional set size of process ``pid`` in KiB (Linux)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def used_kib() -> int:
    """The node's memory in use: ``MemTotal - MemAvailable``, in KiB."""
    fields = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            name, value = line.split(":", 1)
            fields[name] = int(value.split()[0])
    return fields["MemTotal"] - fields["MemAvailable"]


def _sum_shared(_task: Any) -> float:
    return float(shared()["table"].sum())


def _keep(table: np.ndarray) -> None:
    _STATE["table"] = table


def _sum_kept(_task: Any) -> float:
    return float(_STATE["table"].sum())


def _pid(_task: Any) -> int:
    return os.getpid()


def _measure(pids: list[int]) -> tuple[int, int]:
    return sum(pss_kib(p) for p in pids), used_kib()


def _row(approach: str, processes: int, before, during, ok: bool) -> dict[str, Any]:
    return {
        "approach": approach,
        "processes": processes,
        "pss_added_mib": (during[0] - before[0]) / 1024,
        "used_added_mib": (during[1] - before[1]) / 1024,
        "correct": ok,
    }


def _farm_row(comm, pids, table, expected: float) -> dict[str, Any] | None:
    """The farm: one task per rank, every rank computing; the row on rank 0."""
    rank, size = comm.Get_rank(), comm.Get_size()
    poll.barrier(comm)
    before = _measure(pids) if rank == 0 else None
    during: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        if done == total:  # every task done, the window still held
            during.append(_measure(pids))

    data = {"table": table} if rank == 0 else None
    farm = Farm(comm, _sum_shared, cores=size, chunksize=1, progress=progress, shared=data)
    sums = farm.map(range(size) if rank == 0 else None)
    if rank != 0:
        return None
    assert sums is not None
    return _row("farm shared=", size, before, during[0], all(s == expected for s in sums))


def _executor_rows(comm, pids, table, expected: float) -> list[dict[str, Any]]:
    """FarmExecutor and FarmPool with ``shared=``, measured while they hold the window."""
    from ..executor import FarmExecutor, FarmPool

    rank, size = comm.Get_rank(), comm.Get_size()
    data = {"table": table} if rank == 0 else None
    rows = []
    poll.barrier(comm)
    before = _measure(pids) if rank == 0 else None
    with FarmExecutor(comm, shared=data, cores=size) as ex:
        if ex is not None:
            sums = list(ex.map(_sum_shared, range(4 * size)))
            ok = all(s == expected for s in sums)
            rows.append(_row("FarmExecutor shared=", ex.workers, before, _measure(pids), ok))
    poll.barrier(comm)
    before = _measure(pids) if rank == 0 else None
    pool = FarmPool(comm, shared=data, cores=size)
    if pool.is_master():
        sums = pool.map(_sum_shared, range(4 * size), chunksize=1)
        ok = all(s == expected for s in sums)
        rows.append(_row("FarmPool shared=", pool.workers, before, _measure(pids), ok))
        pool.close()
        pool.join()
    else:
        pool.wait()
    return rows


def _futures_row(comm, pids, table, expected: float) -> dict[str, Any] | None:
    """mpi4py.futures with initargs: the workers are this job's other ranks."""
    from mpi4py.futures import MPICommExecutor

    size = comm.Get_size()
    poll.barrier(comm)
    before = _measure(pids) if comm.Get_rank() == 0 else None
    row = None
    with MPICommExecutor(comm, root=0, initializer=_keep, initargs=(table,)) as pool:
        if pool is not None:
            executor: Any = pool
            sums = list(executor.map(_sum_kept, range(size - 1), chunksize=1))
            ok = all(s == expected for s in sums)
            row = _row("mpi4py.futures initargs", size - 1, before, _measure(pids), ok)
    return row


def _pool_rows(table: np.ndarray, size: int, expected: float) -> list[dict[str, Any]]:
    """multiprocessing.Pool with initargs, forked and spawned, on this process alone."""
    rows = []
    for method in ("fork", "spawn"):
        context = multiprocessing.get_context(method)
        before = _measure([os.getpid()])
        with context.Pool(size, initializer=_keep, initargs=(table,)) as mpool:
            children = set(mpool.map(_pid, range(4 * size), chunksize=1))
            sums = mpool.map(_sum_kept, range(size), chunksize=1)
            now = _measure([os.getpid(), *children])
        ok = all(s == expected for s in sums)
        rows.append(_row(f"Pool initargs ({method})", size, before, now, ok))
    return rows


def memory_part(comm, nbytes: int) -> list[dict[str, Any]] | None:
    """Memory added by sharing one array; rows on rank 0, None elsewhere."""
    rank, size = comm.Get_rank(), comm.Get_size()
    pids = comm.gather(os.getpid(), root=0)
    table = np.arange(nbytes // 8, dtype=np.float64) if rank == 0 else None
    expected = float(table.sum()) if table is not None else 0.0
    farm = _farm_row(comm, pids, table, expected)
    executors = _executor_rows(comm, pids, table, expected)
    futures = _futures_row(comm, pids, table, expected)
    rows = [row for row in (farm, *executors, futures) if row is not None]
    poll.barrier(comm)
    if rank == 0:
        assert table is not None
        rows += _pool_rows(table, size, expected)
    poll.barrier(comm)
    return rows if rank == 0 else None
