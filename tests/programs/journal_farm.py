"""A journaled farm for the journal tests: each task leaves a trace in files.

``python journal_farm.py --journal PATH --count FILE [--resume] [--retries K]
[--grace S] [--fail-once DIR] [--tasks N] [--n FIB_N] [--hold-from K
[--hold-until FILE]] [--chunksize C] [--sleep S]``

Task ``i`` appends ``i`` to ``--count`` when it starts computing (so the test
can count the tasks computed over all runs), computes ``fib(--n)`` by naive
recursion, and returns ``(i, fib)``. With ``--fail-once DIR`` a task raises
the first time it runs (it leaves ``DIR/i`` behind). On success rank 0 checks
every result and prints ``done: verified N``. With ``--hold-from K`` tasks from
index K on never end, so a run cannot get past K results, however fast the
machine: the test kills it there; with ``--hold-until FILE`` too, they wait
only until FILE exists (the test opens the gate when it is ready).
``--chunksize`` is the farm's (default 1; 0 for the farm's own default), and
``--sleep S`` makes every task sleep S seconds after computing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from mpi4py import MPI

from ringmpi.farm import Farm
from ringmpi.fib import fib, fib_exact
from ringmpi.harness import RingmpiError, launch

ARGS = argparse.Namespace()


def task(i: int) -> tuple[int, int]:
    fd = os.open(ARGS.count, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    if ARGS.hold_from is not None and i >= ARGS.hold_from:
        # Held until the test kills the job, or opens the gate.
        while not (ARGS.hold_until and os.path.exists(ARGS.hold_until)):
            time.sleep(0.02)
    if ARGS.fail_once:
        marker = os.path.join(ARGS.fail_once, str(i))
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError(f"task {i} fails on its first attempt")
    value = fib(ARGS.n)
    if ARGS.sleep:
        time.sleep(ARGS.sleep)
    return i, value


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--journal")
    parser.add_argument("--count", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--retries", type=int, default=0)
    parser.add_argument("--grace", type=float, default=None)
    parser.add_argument("--fail-once", default=None)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--errors", default="raise")
    parser.add_argument("--hold-from", type=int, default=None)
    parser.add_argument("--hold-until", default=None)
    parser.add_argument("--chunksize", type=int, default=1)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.parse_args(argv, namespace=ARGS)
    farm = Farm(
        MPI.COMM_WORLD,
        task,
        chunksize=ARGS.chunksize or None,
        journal=ARGS.journal,
        resume=ARGS.resume,
        retries=ARGS.retries,
        grace=ARGS.grace,
        errors=ARGS.errors,
    )
    results = farm.map(range(ARGS.tasks))
    if results is None:
        return 0
    want = [(i, fib_exact(ARGS.n)) for i in range(ARGS.tasks)]
    if results != want:
        wrong = [i for i, (got, ok) in enumerate(zip(results, want)) if got != ok]
        raise RingmpiError(f"{len(wrong)} wrong results, first at task {wrong[0]}")
    print(f"done: verified {len(results)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(launch(main, sys.argv[1:]))
