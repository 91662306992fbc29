"""The executor and the pool used as hostile users use them; for tests/test_engine_e2e.py.

``python hostile_exec.py MODE`` under ``mpiexec -n N``, without ``launch``
(as a plain script would be). Rank 0 prints one line of what it found:

* ``blocking-callback``: a done-callback that submits and waits on another future;
* ``no-with``, ``no-with-nowait``: the executor entered without ``with``, a task
  submitted, and the program ends without ``shutdown`` (or after
  ``shutdown(wait=False)``); the task writes its result to a file;
* ``initializer``: an initializer that raises; pending and later submits;
* ``broken``: the root's thread fails: pending futures and later submits;
* ``pool-timeout``: README's emcee pattern with ``task_timeout`` and a stuck task;
  ``farm-timeout``: ``farm_map`` with one, its ``FarmTimeout`` caught;
* ``lost-not-ft farm|executor``: a worker dies under ULFM, without fault tolerance;
* ``chunksize``: what FarmPool says of a bad chunksize, and its sizes;
* ``misuse``: bad roots, an intercommunicator, a lambda, the executor or a
  communicator as a task's argument;
* ``no-with-submit``: every rank submits to an executor never entered (under
  ``launch``); ``no-with-map``: every rank maps on one, in a plain script.
"""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import sys
import time

from mpi4py import MPI

from ringmpi import FarmExecutor, FarmPool

MODE = sys.argv[1]
OUT = sys.argv[2] if len(sys.argv) > 2 else ""


def square(x: int) -> int:
    return x * x


def slow_write(path: str) -> int:
    time.sleep(1.0)
    with open(path, "w") as file:
        file.write("done\n")
    return 1


def slow_square(x: int) -> int:
    time.sleep(0.01)
    return x * x


def bad_init() -> None:
    raise ValueError("no licence server")


def stuck(x: int) -> int:
    if x == 3:
        time.sleep(600)
    return x


def blocking_callback(ex: FarmExecutor) -> str:
    seen = []

    def callback(future):
        # Blocks on another future: the farm must go on meanwhile.
        seen.append(ex.submit(square, future.result()).result(timeout=30))

    first = ex.submit(square, 3)
    first.add_done_callback(callback)
    later = [ex.submit(square, i) for i in range(20)]
    done, _ = concurrent.futures.wait(later, timeout=30)
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    return f"later done: {len(done)} of 20, callback got: {seen}"


def initializer(comm) -> str:
    with FarmExecutor(comm, initializer=bad_init) as ex:
        if ex is None:
            return ""
        futures = [ex.submit(square, i) for i in range(10)]
        kinds = {type(f.exception(timeout=30)).__mro__[1].__name__ for f in futures}
        try:
            ex.submit(square, 1)
            later = "accepted"
        except concurrent.futures.BrokenExecutor as exc:
            later = f"BrokenExecutor ({exc})"
        broken = all(isinstance(f.exception(), concurrent.futures.BrokenExecutor) for f in futures)
    return f"pending broken: {broken} {sorted(kinds)}, later submit: {later}"


def broken(comm) -> str:
    from ringmpi.farm import _engine

    calls = {"n": 0}
    original = _engine.Engine._on_report

    def failing(self, *args):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("the engine failed")
        return original(self, *args)

    ex = FarmExecutor(comm)
    entered = ex.__enter__()
    if entered is None:
        return ""
    _engine.Engine._on_report = failing  # type: ignore[method-assign]
    futures = []
    for i in range(200):
        futures.append(ex.submit(slow_square, i))
        if i == 0:
            futures[0].result(timeout=30)  # the first report is in
    concurrent.futures.wait(futures, timeout=30)
    failed = [f.exception() for f in futures if f.exception() is not None]
    pending = all(isinstance(e, concurrent.futures.BrokenExecutor) for e in failed)
    try:
        ex.submit(square, 1)
        later = "accepted"
    except concurrent.futures.BrokenExecutor:
        later = "BrokenExecutor"
    done = all(f.done() for f in futures)
    return f"all done: {done}, failed: {bool(failed)}, broken: {pending}, later submit: {later}"


def pool_timeout(comm) -> str:
    pool = FarmPool(comm, task_timeout=2)
    if not pool.is_master():
        pool.wait()
        sys.exit(0)
    try:
        pool.map(stuck, range(8))
    except Exception as exc:
        print(f"map raised {type(exc).__name__}", flush=True)
    pool.close()
    return ""


def dies_on_two(x: int) -> int:
    if MPI.COMM_WORLD.Get_rank() == 2:  # at its first task
        os.kill(os.getpid(), 9)
    time.sleep(0.05)
    return x


def lost_not_ft(comm) -> str:
    """A worker dies under ULFM, the farm not fault tolerant (argv: how)."""
    from ringmpi.farm import farm_map

    if sys.argv[2] == "farm":
        return str(farm_map(comm, dies_on_two, range(12), chunksize=1, cores=3))
    with FarmExecutor(comm, cores=3) as ex:
        if ex is not None:
            return str(list(ex.map(dies_on_two, range(12))))
    return ""


def farm_timeout(comm) -> str:
    from ringmpi.farm import farm_map

    try:
        farm_map(comm, stuck, range(8), task_timeout=2)
    except Exception as exc:
        print(f"farm_map raised {type(exc).__name__}", flush=True)
    return "the script goes on" if comm.Get_rank() == 0 else ""


def chunksize(comm) -> str:
    with FarmPool(comm) as pool:
        if pool is None:
            return ""
        said = []
        for method in (pool.map, pool.imap, pool.imap_unordered, pool.map_async):
            for size in (0, -3):
                try:
                    method(square, range(4), size)
                    said.append("accepted")
                except ValueError:
                    said.append("ValueError")
        return f"{sorted(set(said))}, size: {pool.size == pool._processes == pool.workers}"


def misuse(comm) -> str:
    said = []
    for root in (-1, comm.Get_size()):
        for kind in (FarmExecutor, FarmPool):
            try:
                kind(comm, root=root)
                said.append("accepted")
            except ValueError:
                said.append("ValueError")
    if comm.Get_size() > 1:
        local = comm.Split(comm.Get_rank() % 2)
        inter = local.Create_intercomm(0, comm, 1 - comm.Get_rank() % 2)
        try:
            FarmExecutor(inter)
            said.append("accepted")
        except ValueError:
            said.append("ValueError")
        inter.Free()
        local.Free()
    refused = sorted(set(said))
    own = comm.Dup()  # a communicator of ours, which cannot travel

    def local(x):
        return x

    with FarmExecutor(comm) as ex:
        if ex is None:
            own.Free()
            return ""
        pickled = []
        for fn in (lambda x: x, local):
            try:
                ex.submit(fn, 1)
                pickled.append("accepted")
            except pickle.PicklingError as exc:
                pickled.append("module level" in str(exc))
        errors = [
            ex.submit(square, ex).exception(timeout=30),
            ex.submit(id, own).exception(timeout=30),
        ]
        one_line = [
            type(e).__name__ + (": one line" if "\n" not in str(e) else ": lines") for e in errors
        ]
        travels = ex.workers > 1 or not ex.stats.root_computes
        if not travels:  # nothing is pickled at one rank
            one_line = ["(root computes)"]
        after = ex.submit(square, 5).result(timeout=30)
    own.Free()
    return f"refused: {refused}, lambda: {pickled}, as arguments: {one_line}, after: {after}"


def failing_tasks(n: int):
    yield from range(n)
    raise OSError("the input file went away")


def generator(comm) -> str:
    """The root's task generator raises (read whole: a progress callback)."""
    from ringmpi.farm import farm_map

    begin = time.monotonic()
    tasks = failing_tasks(5) if comm.Get_rank() == 0 else None
    try:
        result = farm_map(comm, square, tasks, progress=lambda done, total: None)
        said = f"returned {result}"
    except OSError as exc:
        said = f"raised OSError: {exc}"
    took = comm.allreduce(time.monotonic() - begin, op=MPI.MAX)
    after = farm_map(comm, square, [1, 2] if comm.Get_rank() == 0 else None)
    if comm.Get_rank() != 0:
        return ""
    return f"{said}, every rank out within 5 s: {took < 5}, next farm: {after}"


def no_with_submit(argv) -> int:
    ex = FarmExecutor(MPI.COMM_WORLD)
    ex.submit(square, 2)
    return 0


def main() -> int:
    comm = MPI.COMM_WORLD
    if MODE == "blocking-callback":
        with FarmExecutor(comm) as ex:
            if ex is not None:
                print(blocking_callback(ex), flush=True)
        return 0
    if MODE == "no-with-submit":
        from ringmpi.harness import launch

        return launch(no_with_submit, [])
    if MODE == "no-with-map":
        print(list(FarmExecutor(comm).map(square, range(4))))  # the line named
        return 0
    if MODE in ("no-with", "no-with-nowait"):
        ex = FarmExecutor(comm).__enter__()
        if ex is not None:
            ex.submit(slow_write, OUT)
            if MODE == "no-with-nowait":
                ex.shutdown(wait=False)
            print("root leaves", flush=True)
        return 0
    line = {
        "initializer": initializer,
        "broken": broken,
        "pool-timeout": pool_timeout,
        "farm-timeout": farm_timeout,
        "lost-not-ft": lost_not_ft,
        "chunksize": chunksize,
        "misuse": misuse,
        "generator": generator,
    }[MODE](comm)
    if line:
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RINGMPI_CORES", "8")
    sys.exit(main())
