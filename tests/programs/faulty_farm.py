"""A farm whose task number 5 misbehaves as argv[1] says; for the failure catalogue.

``python faulty_farm.py MODE [TASK_TIMEOUT]`` with MODE one of raise,
unpicklable, exit, interrupt, hang, crash (an uncaught exception outside the farm, on
rank 1 only).
"""

from __future__ import annotations

import sys
import time

from mpi4py import MPI

from ringmpi.farm import farm_map
from ringmpi.harness import launch

MODE = sys.argv[1]


def task(x):
    if x == 5:
        if MODE == "raise":
            raise ZeroDivisionError("task five divides by zero")
        if MODE == "unpicklable":
            return lambda: x
        if MODE == "exit":
            sys.exit(4)
        if MODE == "interrupt":
            raise KeyboardInterrupt
        if MODE == "hang":
            while True:
                time.sleep(0.1)
    time.sleep(0.05)
    return x * x


def main(argv):
    comm = MPI.COMM_WORLD
    if MODE == "crash" and comm.Get_rank() == 1:
        raise RuntimeError("injected failure on rank 1")
    timeout = float(argv[1]) if len(argv) > 1 else None
    results = farm_map(comm, task, range(10), chunksize=1, task_timeout=timeout)
    if results is not None:
        print("done:", results, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(launch(main, sys.argv[1:]))
