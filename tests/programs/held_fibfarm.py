"""fibfarm whose tasks hold until released; for tests that inject a fault mid-run.

``python held_fibfarm.py HOLD_DIR [fibfarm arguments]`` runs
``python -m ringmpi.fibfarm`` unchanged, except that every task, once it has
computed its fib, writes ``HOLD_DIR/started-RANK-PID-N`` and then waits until
the file ``HOLD_DIR/release`` exists before returning. A test waits for a
rank's marker, injects its fault, and then releases the tasks, so the run
cannot end before the fault on a machine of any speed. Tasks that start after
the release return at once: what the farm redoes after a loss is not held.

``python held_fibfarm.py HOLD_DIR --hold-on HOST [fibfarm arguments]`` holds
only the tasks that run on HOST; the others return at once (no marker), so
the rest of the run can finish while HOST's ranks hold theirs.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from ringmpi.fibfarm import _run as fibfarm
from ringmpi.harness import launch

HOLD = Path(sys.argv[1])
RANK = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMIX_RANK", "0"))
#: Bound on the hold, so a test that never releases cannot leave a run behind.
LIMIT = 300.0
_fib_of = fibfarm.fib_of
ARGS = sys.argv[2:]
HOLD_ON: str | None = None
if ARGS[:1] == ["--hold-on"]:
    HOLD_ON, ARGS = ARGS[1], ARGS[2:]


def held_fib_of(item: tuple[int, int]) -> int:
    value = _fib_of(item)
    if HOLD_ON is not None and socket.gethostname() != HOLD_ON:
        return value
    (HOLD / f"started-{RANK}-{os.getpid()}-{item[1]}").touch()
    release = HOLD / "release"
    deadline = time.monotonic() + LIMIT
    while not release.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"never released: no {release}")
        time.sleep(0.01)
    return value


fibfarm.fib_of = held_fib_of

if __name__ == "__main__":
    sys.exit(launch(fibfarm.main, ARGS))
