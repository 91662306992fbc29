"""A concurrent.futures script as its users write it, run by ``python -m ringmpi.run``.

``plain_script.py OUT [mode]``: appends one line per run of the main part to
OUT (and one per import by a worker to OUT.imported), prints the results as
JSON. Modes: ``ok``, ``exit=K``, ``raise``, ``pool``, ``again`` (two
executors one after the other, the second without ``with``).
"""

import json
import os
import sys
from concurrent.futures import as_completed

from ringmpi import FarmExecutor, FarmPool

OUT = sys.argv[1]
with open(OUT + ".imported", "a") as log:  # top level: every rank that imports it
    log.write(f"{__name__} {os.getpid()}\n")


def square(x):
    return x * x


class Point:
    def __init__(self, x):
        self.x = x


def point(x):
    return Point(x + 0.5)


def expected():
    return {"squares": [square(x) for x in range(50)], "points": [x + 0.5 for x in range(10)]}


if __name__ == "__main__":
    mode = sys.argv[2] if len(sys.argv) > 2 else "ok"
    with open(OUT, "a") as log:
        log.write(f"main {os.getpid()} {sys.argv[1:]}\n")
    if mode == "pool":
        with FarmPool() as pool:
            squares = pool.map(square, range(50))
        pool = FarmPool()  # left open: closed when the script ends
        points = sorted(p.x for p in pool.map(point, range(10)))
    else:
        with FarmExecutor() as ex:
            squares = list(ex.map(square, range(50)))
            points = sorted(
                f.result().x for f in as_completed(ex.submit(point, x) for x in range(10))
            )
        if mode == "again":
            ex = FarmExecutor()
            assert ex.submit(square, 12).result() == 144
            ex.shutdown()
    print(json.dumps({"squares": squares, "points": points}), flush=True)
    if mode.startswith("exit="):
        sys.exit(int(mode[5:]))
    if mode == "raise":
        raise LookupError("the script's own error")
