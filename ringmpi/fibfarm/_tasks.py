"""The farm's tasks: each ``fib(n)`` unfolded into sub-calls, the function workers run, its cost."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from .. import fib as fibmod


def subtasks(tasks: Sequence[int], depth: int) -> list[tuple[int, int]]:
    """Return ``(task_index, m)`` for every sub-call of every task."""
    return [(i, m) for i, n in enumerate(tasks) for m in fibmod.split(n, depth)]


def fib_of(item: tuple[int, int]) -> int:
    """Farm function for split tasks: ``fib`` of the sub-call argument."""
    return fibmod.fib(item[1])


def fib_cost(item: tuple[int, int]) -> float:
    """Relative cost of a split task: the calls it makes (capped, to stay a float)."""
    return _calls_of(item[1])


@functools.lru_cache(maxsize=4096)
def _calls_of(n: int) -> float:
    # Runs of many tasks repeat the same few n: work each out once.
    return 10 ** min(fibmod.log10_calls(n), 290.0)


# Pickled to the workers and named in journals as ``ringmpi.fibfarm.fib_of``,
# where users import it from, whichever module defines it.
fib_of.__module__ = "ringmpi.fibfarm"
