"""A function the workers do not have, as schwimmbad's users write it; for
tests/test_engine_e2e.py.

``python late_function.py MODE``: ``pool``: ``log_prob`` is defined after
``pool.wait()``, so only the root has it (emcee's documented pattern gone
wrong); ``executor``: a class defined on the root only travels as an
argument; ``farm``: ``farm_map`` of a function defined on the root only.
Rank 0 prints what the call raised, in one line.
"""

from __future__ import annotations

import sys

from mpi4py import MPI

from ringmpi import FarmExecutor, FarmPool
from ringmpi.farm import farm_map

MODE = sys.argv[1]
comm = MPI.COMM_WORLD


def said(exc: BaseException) -> str:
    return f"raised {type(exc).__name__}: {exc}".replace("\n", "\\n")


if MODE == "pool":
    pool = FarmPool(comm)
    if not pool.is_master():
        pool.wait()
        sys.exit(0)

    def log_prob(x):
        return -x * x

    try:
        pool.map(log_prob, range(8))
    except Exception as exc:
        print(said(exc), flush=True)
    print(f"after: {pool.map(abs, [-1, -2])}", flush=True)
    pool.close()
elif MODE == "executor":
    with FarmExecutor(comm) as ex:
        if ex is not None:

            class Point:  # only the root runs this block
                pass

            Point.__qualname__ = "Point"
            sys.modules["__main__"].Point = Point  # type: ignore[attr-defined]
            future = ex.submit(id, Point())
            print(said(future.exception(timeout=60)), flush=True)
            print(f"after: {ex.submit(abs, -3).result(timeout=60)}", flush=True)
elif MODE == "farm":
    if comm.Get_rank() == 0:

        def root_only(x):
            return x

        sys.modules["__main__"].root_only = root_only  # type: ignore[attr-defined]
        root_only.__qualname__ = "root_only"
        fn, tasks = root_only, range(4)
    else:
        fn, tasks = None, None
    results = farm_map(comm, fn, tasks, errors="collect")
    if results is not None:
        print(said(results[0]), flush=True)
