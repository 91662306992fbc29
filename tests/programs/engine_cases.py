"""The engine's promises through the executor and the pool; for tests/test_engine_e2e.py.

``python engine_cases.py MODE HOLD_DIR`` under ``mpiexec -n 3`` (two workers).
Tasks that hold wait for ``HOLD_DIR/release`` (or ``HOLD_DIR/go-I`` for task
I), each leaving ``HOLD_DIR/started-I`` behind when it starts, so what the
test sees does not depend on the machine's speed. Rank 0 prints one line of
what it found; the test reads it.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

from mpi4py import MPI

from ringmpi import FarmExecutor, FarmPool
from ringmpi.harness import launch

MODE = sys.argv[1]
HOLD = Path(sys.argv[2])
#: Seconds a held task waits at most, so a test that never releases leaves no run behind.
LIMIT = 120.0


def held(i: int) -> int:
    """Start, then wait for the release."""
    (HOLD / f"started-{i}").touch()
    deadline = time.monotonic() + LIMIT
    while not (HOLD / "release").exists() and not (HOLD / f"go-{i}").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {i} was never released")
        time.sleep(0.005)
    return i


def square(x: int) -> int:
    return x * x


def stops_itself(i: int) -> int:
    """The first of these tasks on rank 1 stops its process, as a SIGSTOP would."""
    if MPI.COMM_WORLD.Get_rank() == 1 and not (HOLD / "stopped").exists():
        (HOLD / "stopped").touch()
        os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(0.001)
    return i


def _raise(kind: type[BaseException]):
    raise kind("on purpose")


class Hostile:
    """Pickles badly: raises ``kind`` when pickled (``when="dump"``) or when
    unpickled (``"load"``)."""

    def __init__(self, kind: type[BaseException], when: str):
        self.kind, self.when = kind, when

    def __reduce__(self):
        if self.when == "dump":
            raise self.kind("on purpose")
        return (_raise, (self.kind,))


def name_of(x) -> str:
    return type(x).__name__


def returns_hostile(kind: type[BaseException], when: str) -> Hostile:
    return Hostile(kind, when)


#: (what the task gets or returns, whether it is the result) per bad task
HOSTILE = [
    (ValueError, "dump", False),
    (SystemExit, "dump", False),
    (ZeroDivisionError, "load", False),
    (SystemExit, "load", False),
    (KeyboardInterrupt, "load", False),
    (RuntimeError, "dump", True),
    (SystemExit, "dump", True),
    (ValueError, "load", True),
    (SystemExit, "load", True),
]


def hostile_calls(travels: bool = True):
    """20 innocent tasks with the bad ones among them: ``(fn, args, bad)``.

    A result that fails to unpickle on the root comes in one report with
    those of the tasks that ended on its worker within a few ms: they keep
    theirs. Where nothing travels (one rank) only what raises when pickled is
    bad, and only as a result."""
    calls = [(square, (i,), False) for i in range(20)]
    for k, (kind, when, result) in enumerate(HOSTILE):
        if not travels and result and when == "load":
            continue
        if not travels and not result:
            calls.insert(2 * k + 1, (name_of, (Hostile(kind, when),), False))
        elif result:
            calls.insert(2 * k + 1, (returns_hostile, (kind, when), True))
        else:
            calls.insert(2 * k + 1, (name_of, (Hostile(kind, when),), True))
    return calls


def hostile_check(outcomes) -> str:
    """``outcomes``: (bad, value or exception) per call, in order."""
    good = sum(1 for bad, got in outcomes if not bad and not isinstance(got, BaseException))
    innocent = sum(1 for bad, _ in outcomes if not bad)
    failed = sum(1 for bad, got in outcomes if bad and isinstance(got, BaseException))
    bad = sum(1 for bad, _ in outcomes if bad)
    lines = all("\n" not in str(got) for _, got in outcomes if isinstance(got, BaseException))
    return f"innocent: {good} of {innocent}, bad failed: {failed} of {bad}, one line: {lines}"


class RaisesAsItIsSet:
    """Raises ``kind`` as its state is set, on unpickling: the root cannot
    tell which result of the report raised (it fails the report's tasks)."""

    def __init__(self, kind: type[BaseException]):
        self.kind = kind

    def __setstate__(self, state):
        raise state["kind"]("on purpose")


def result_unpickles_badly(kind: type[BaseException]) -> RaisesAsItIsSet:
    time.sleep(0.2)  # reported alone
    return RaisesAsItIsSet(kind)


def pickling(ex: FarmExecutor) -> str:
    """Pickling or unpickling that raises anything fails that task alone."""
    calls = hostile_calls(travels=ex.workers > 1 or not ex.stats.root_computes)
    futures = [(bad, ex.submit(fn, *args)) for fn, args, bad in calls]
    travels = ex.workers > 1 or not ex.stats.root_computes
    if travels:  # a result that fails to unpickle here, alone
        for kind in (ValueError, SystemExit, KeyboardInterrupt):
            futures.append((True, ex.submit(result_unpickles_badly, kind)))
            futures[-1][1].exception(timeout=60)
    outcomes = []
    for bad, future in futures:
        exc = future.exception(timeout=60)
        outcomes.append((bad, future.result() if exc is None else exc))
    # And the executor goes on.
    after = ex.submit(square, 12).result(timeout=60)
    return f"{hostile_check(outcomes)}, after: {after}"


def _apply(call):
    fn, args = call
    return fn(*args)


def pickling_farm(comm) -> str:
    """The same through farm_map, errors collected."""
    from ringmpi.farm import TaskError, farm_map

    calls = hostile_calls(travels=comm.Get_size() > 1)
    tasks = [(fn, args) for fn, args, _ in calls] if comm.Get_rank() == 0 else None
    results = farm_map(comm, _apply, tasks, errors="collect", chunksize=3)
    if results is None:
        return ""
    outcomes = [(bad, got) for (_, _, bad), got in zip(calls, results)]
    typed = all(isinstance(got, (int, TaskError)) for bad, got in outcomes if bad)
    return f"{hostile_check(outcomes)}, typed: {typed}"


def started() -> int:
    return len(list(HOLD.glob("started-*")))


def wait_for(condition, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"never {what}")
        time.sleep(0.005)


def release() -> None:
    (HOLD / "release").touch()


def head_of_line(ex: FarmExecutor) -> str:
    """Tiny tasks submitted while one long task runs all finish before it does."""
    slow = ex.submit(held, 0)
    wait_for(lambda: started() == 1, "started the long task")
    tiny = [ex.submit(square, i) for i in range(1, 401)]
    done, _ = concurrent.futures.wait(tiny, timeout=30)
    still = not slow.done()
    release()
    assert slow.result() == 0 and [f.result() for f in tiny] == [i * i for i in range(1, 401)]
    return f"tiny done: {len(done)} of {len(tiny)} while the long task ran: {still}"


def running(ex: FarmExecutor) -> str:
    """Only the tasks that started say running()."""
    futures = [ex.submit(held, i) for i in range(40)]
    wait_for(lambda: started() == 2, "started two tasks")
    wait_for(lambda: sum(f.running() for f in futures) == 2, "two futures running", 10)
    most = 0
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        most = max(most, sum(f.running() for f in futures))
        time.sleep(0.01)
    release()
    assert [f.result() for f in futures] == list(range(40))
    return f"running at most: {most} of {len(futures)}"


def cancel(ex: FarmExecutor) -> str:
    """shutdown(cancel_futures=True) cancels every task that has not started."""
    futures = [ex.submit(held, i) for i in range(40)]
    wait_for(lambda: sum(f.running() for f in futures) == 2, "two futures running")
    ex.shutdown(wait=False, cancel_futures=True)
    cancelled = sum(f.cancelled() for f in futures)
    time.sleep(2)  # the workers give back what they hold before the release
    release()
    ex.shutdown(wait=True)
    ran = started()
    return f"cancelled: {cancelled} of {len(futures)}, ran: {ran}"


def as_completed(ex: FarmExecutor) -> str:
    """Each result comes as its task ends, not with the rest of a chunk."""
    futures = {ex.submit(held, i): i for i in range(20)}
    order = []
    (HOLD / "go-0").touch()
    for future in concurrent.futures.as_completed(futures, timeout=30):
        order.append(future.result())
        (HOLD / f"go-{len(order)}").touch()
    stats = ex.stats
    in_order = order == list(range(20))
    return f"in order: {in_order}, chunks: {stats.chunks > 0}, elapsed: {stats.elapsed > 0}"


def timeout_stopped(ex: FarmExecutor) -> str:
    """A worker stopped while it holds many tasks: FarmTimeout within the
    task's own limit, however many it holds."""
    futures = [ex.submit(stops_itself, i) for i in range(600)]
    begin = time.monotonic()
    try:
        concurrent.futures.wait(futures, timeout=300)
        failed = [f for f in futures if f.done() and f.exception() is not None]
        kind = type(failed[0].exception()).__name__ if failed else "none"
    finally:
        took = time.monotonic() - begin
    return f"failed with {kind} after {took:.1f} s"


def endless(comm) -> str:
    """Endless iterators go through imap, imap_unordered and Executor.map."""
    got = []
    with FarmPool(comm) as pool:
        if pool is None:
            return ""
        for name, results in [
            ("imap", pool.imap(square, itertools.count())),
            ("imap_unordered", pool.imap_unordered(square, itertools.count(), chunksize=8)),
        ]:
            first = list(itertools.islice(results, 500))
            results.close()
            if "unordered" in name:  # any 500 distinct tasks, in any order
                roots = {math.isqrt(v) for v in first}
                ok = len(roots) == 500 and all(r * r in first for r in roots)
            else:
                ok = first == [i * i for i in range(500)]
            got.append(f"{name}: {ok}")
    return ", ".join(got)


def endless_executor(ex: FarmExecutor) -> str:
    results = ex.map(square, itertools.count())
    first = list(itertools.islice(results, 500))
    results.close()
    return f"map: {first == [i * i for i in range(500)]}"


def terminate(comm) -> str:
    """terminate() ends at once: what has not started is cancelled."""
    pool = FarmPool(comm)
    if not pool.is_master():
        pool.wait()
        return ""
    result = pool.map_async(held, range(200), chunksize=1)
    wait_for(lambda: started() == 2, "started two tasks")
    running = [HOLD / path.name.replace("started", "go") for path in HOLD.glob("started-*")]
    # Those two end a second after terminate() begins; the rest never start.
    threading.Timer(1.0, lambda: [path.touch() for path in running]).start()
    begin = time.monotonic()
    pool.terminate()
    took = time.monotonic() - begin
    pool.join()
    return f"terminated in {took:.1f} s, ran: {started()}, ready: {result.ready()}"


if MPI.COMM_WORLD.Get_rank() != 0:

    class WorkerOnly:
        """A class the root does not have: its instances cannot unpickle there."""


def worker_only() -> object:
    return WorkerOnly()


def one_report(comm) -> str:
    """Results that fail to unpickle on the root among others of one report
    (instant tasks, one chunk, one worker): each fails alone."""
    from ringmpi.farm import farm_map

    bad = {
        3: (returns_hostile, (ValueError, "load")),
        6: (returns_hostile, (KeyboardInterrupt, "load")),
        9: (worker_only, ()),
    }
    calls = [(*bad.get(i, (square, (i,))), i in bad) for i in range(12)]
    tasks = [(fn, args) for fn, args, _ in calls] if comm.Get_rank() == 0 else None
    results = farm_map(comm, _apply, tasks, errors="collect", chunksize=12, cores=1)
    if results is None:
        return ""
    outcomes = [(bad, got) for (_, _, bad), got in zip(calls, results)]
    named = "define WorkerOnly at module level" in str(results[9])
    return f"{hostile_check(outcomes)}, named: {named}"


EXECUTOR_MODES = {
    "head-of-line": head_of_line,
    "running": running,
    "cancel": cancel,
    "as-completed": as_completed,
    "timeout-stopped": timeout_stopped,
    "endless-executor": endless_executor,
    "pickling": pickling,
}


def main(argv) -> int:
    comm = MPI.COMM_WORLD
    if MODE in EXECUTOR_MODES:
        timeout = 2 if MODE == "timeout-stopped" else None
        with FarmExecutor(comm, task_timeout=timeout) as ex:
            if ex is not None:
                print(EXECUTOR_MODES[MODE](ex), flush=True)
        return 0
    line = {
        "endless": endless,
        "terminate": terminate,
        "pickling-farm": pickling_farm,
        "one-report": one_report,
    }[MODE](comm)
    if line:
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(launch(main, sys.argv[1:]))
