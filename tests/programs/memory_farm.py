"""40 tasks under a memory limit, one of which asks for more: ``memory_farm.py WHAT [SCHEDULE]``.

WHAT is ``farm`` (farm_map, errors="collect"), ``executor`` or ``pool``
(under ``python -m ringmpi.run``). Prints one JSON line: the tasks that
failed and their messages, and how many succeeded.
"""

import json
import sys

import numpy as np

LIMIT = "400M"
GREEDY = 3


def task(i):
    size = 600 << 20 if i == GREEDY else 1 << 20
    return float(np.ones(size // 8).sum())


def report(outcomes):
    failed = {i: o for i, o in outcomes if isinstance(o, str)}
    print(json.dumps({"failed": failed, "ok": len(outcomes) - len(failed)}), flush=True)


def caught(future):
    try:
        return future.result()
    except MemoryError as exc:
        return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "farm":
        from mpi4py import MPI

        from ringmpi.farm import TaskError, farm_map

        schedule = sys.argv[2]
        out = farm_map(
            MPI.COMM_WORLD, task, range(40), memory_limit=LIMIT, errors="collect", schedule=schedule
        )
        if out is not None:
            report([(i, str(r) if isinstance(r, TaskError) else r) for i, r in enumerate(out)])
    elif what == "executor":
        from ringmpi import FarmExecutor

        with FarmExecutor(memory_limit=LIMIT) as ex:
            futures = [ex.submit(task, i) for i in range(40)]
            report([(i, caught(f)) for i, f in enumerate(futures)])
    else:
        from ringmpi import FarmPool

        with FarmPool(memory_limit=LIMIT) as pool:
            results = [pool.apply_async(task, (i,)) for i in range(40)]
            outcomes = []
            for i, r in enumerate(results):
                try:
                    outcomes.append((i, r.get()))
                except MemoryError as exc:
                    outcomes.append((i, f"{type(exc).__name__}: {exc}"))
            report(outcomes)
