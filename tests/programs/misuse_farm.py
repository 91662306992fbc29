"""The farm misused as users do; for the failure catalogue.

``python misuse_farm.py MODE`` with MODE one of:

* ``root=7``, ``root=-1``, ``chunksize=0``, ``schedule=bogus``,
  ``errors=ignore``, ``chunk_size=2``: that keyword passed to ``farm_map``
  on every rank; ``root-only:chunksize=0``, ``rank1-only:chunksize=0``: on
  the root, or on rank 1, only;
* ``no-tasks``: the root passes ``tasks=None``; ``not-iterable``: ``tasks=5``;
* ``unpicklable-task``: a task that cannot be pickled (a lambda);
* ``break-then-farm``: the root breaks out of ``farm_imap_unordered``
  without closing it (the iterator stays referenced), then every rank calls
  ``farm_map``; prints ``done: next farm gave [...]``; ``break-then-farm-grace``:
  the same with a stop signal handled (``grace=5``);
* ``lambda``, ``local``: a function that cannot be pickled;
* ``only-root``: only the root calls the farm (the others return);
  ``root-skips``: every rank but the root calls it; ``rank1-skips``: every
  rank but rank 1;
* ``close-early``: the root stops reading ``farm_imap_unordered`` after two
  results and closes it; prints ``done: closed after N`` when every rank is out;
  ``close-early-grace``: the same with a stop signal handled (``grace=5``);
* ``late-root``: the root sleeps 3 s before calling the farm; prints each
  worker's CPU seconds per wall second spent in the farm.
"""

from __future__ import annotations

import sys
import time

from mpi4py import MPI

from ringmpi.farm import farm_imap_unordered, farm_map
from ringmpi.harness import launch


def square(x):
    return x * x


def slow(x):
    time.sleep(0.2)
    return x


def main(argv):
    mode = argv[0]
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    tasks = range(20) if rank == 0 else None
    if "-only:" in mode:
        who, option = mode.split("-only:")
        key, value = option.split("=", 1)
        alone = rank == (0 if who == "root" else 1)
        farm_map(comm, square, tasks, **({key: int(value)} if alone else {}))
    elif "=" in mode:
        key, value = mode.split("=", 1)
        option = {key: int(value) if value.lstrip("-").isdigit() else value}
        farm_map(comm, square, tasks, **option)
    elif mode == "no-tasks":
        farm_map(comm, square, None)
    elif mode == "not-iterable":
        farm_map(comm, square, 5 if rank == 0 else None)
    elif mode == "unpicklable-task":
        farm_map(comm, square, [1, 2, lambda: 3, 4] if rank == 0 else None, chunksize=1)
    elif mode in ("break-then-farm", "break-then-farm-grace"):
        # Left half-read without close(): the next farm must still start.
        grace = 5.0 if mode.endswith("-grace") else None
        tasks = range(40) if rank == 0 else None
        kept = farm_imap_unordered(comm, slow, tasks, chunksize=1, grace=grace)
        for got, _ in enumerate(kept, 1):
            if got == 2:
                break
        results = farm_map(comm, square, range(5) if rank == 0 else None)
        if rank == 0:
            print(f"done: next farm gave {results}", flush=True)
    elif mode == "lambda":
        farm_map(comm, lambda x: x, tasks)
    elif mode == "local":

        def local(x):
            return x

        farm_map(comm, local, tasks)
    elif mode in ("root-skips", "rank1-skips"):
        if rank != (0 if mode == "root-skips" else 1):
            farm_map(comm, square, tasks)
    elif mode == "only-root":
        if rank == 0:
            farm_map(comm, square, tasks)
    elif mode in ("close-early", "close-early-grace"):
        grace = 5.0 if mode == "close-early-grace" else None
        tasks = range(40) if rank == 0 else None
        results = farm_imap_unordered(comm, slow, tasks, chunksize=1, grace=grace)
        got = 0
        for _ in results:
            got += 1
            if got == 2:
                break
        results.close()
        comm.Barrier()
        if rank == 0:
            print(f"done: closed after {got}", flush=True)
    elif mode == "late-root":
        if rank == 0:
            time.sleep(3)
        wall, cpu = time.monotonic(), time.process_time()
        farm_map(comm, square, tasks)
        share = (time.process_time() - cpu) / (time.monotonic() - wall)
        shares = comm.gather(share, root=0)
        if rank == 0:
            print("done: cpu per wall second " + " ".join(f"{s:.3f}" for s in shares[1:]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    return 0


if __name__ == "__main__":
    sys.exit(launch(main, sys.argv[1:]))
