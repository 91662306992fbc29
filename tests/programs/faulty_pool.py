"""The executor and the pool when things go wrong; for the failure catalogue.

``python faulty_pool.py MODE [HOLD_DIR]`` with MODE one of map-raises (a task raises
inside ``pool.map``), block-raises (the root's own code raises inside the
``with FarmExecutor`` block while tasks run), worker-killed (tasks run until
a worker is killed from outside), worker-killed-ft (the same, fault
tolerant: under ULFM the lost worker's tasks run again elsewhere), hang
(a submitted task never returns; the executor's task_timeout is 2 s).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from mpi4py import MPI

from ringmpi import FarmExecutor, FarmPool
from ringmpi.harness import launch

MODE = sys.argv[1]
#: worker-killed modes: each task writes HOLD/started-RANK-PID-X and waits for
#: HOLD/release (as tests/programs/held_fibfarm.py), so the kill lands mid-run.
HOLD = Path(sys.argv[2]) if len(sys.argv) > 2 else None
RANK = os.environ.get("OMPI_COMM_WORLD_RANK", "0")


def task(x):
    if x == 5 and MODE == "hang":
        while True:
            time.sleep(0.1)
    if x == 5 and MODE == "map-raises":
        raise ZeroDivisionError("task five divides by zero")
    if HOLD is not None:
        (HOLD / f"started-{RANK}-{os.getpid()}-{x}").touch()
        deadline = time.monotonic() + 300
        while not (HOLD / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return x * x


def main(argv):
    comm = MPI.COMM_WORLD
    if MODE == "hang":
        with FarmExecutor(comm, task_timeout=2) as ex:
            if ex is not None:
                futures = [ex.submit(task, i) for i in range(10)]
                print("done:", [f.result() for f in futures], flush=True)
        return 0
    if MODE == "block-raises":
        with FarmExecutor(comm) as ex:
            if ex is not None:
                futures = [ex.submit(task, i) for i in range(100)]
                futures[0].result()
                raise RuntimeError("injected failure in the block")
        return 0
    if MODE == "worker-killed-ft":
        with FarmPool(comm, fault_tolerant=True) as pool:
            if pool is not None:
                for x, value in zip(range(6), pool.imap(task, range(6))):
                    print(f"square({x}) = {value}", flush=True)
        return 0
    with FarmPool(comm) as pool:
        if pool is not None:
            print("done:", pool.map(task, range(10), chunksize=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(launch(main, sys.argv[1:]))
