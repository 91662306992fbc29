"""The Fibonacci benchmark's approaches that run on every rank: mpi4py.futures and the farm."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from .. import fib as fibmod
from .. import fibfarm
from ._local import noop

#: Levels of unfolding for ``farm-split``.
SPLIT_DEPTH = 3


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
                list(executor.map(noop, range(4 * comm.Get_size())))
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
