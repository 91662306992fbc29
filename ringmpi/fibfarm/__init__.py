"""``python -m ringmpi.fibfarm``: the article's slow recursive Fibonacci over the task farm.

The program is :mod:`._run` (``run``, ``main``, ``cli``); its command line and
every check before any work, :mod:`._args`; the farm's tasks and the function
the workers run, :mod:`._tasks`; what it prints and draws, :mod:`._report`.
The Fibonacci functions themselves are :mod:`ringmpi.fib`.
"""

from __future__ import annotations

from ._args import DEFAULT_GRACE, DEFAULT_TASKS, MAX_TASKS, PROG, build_parser, parse_tasks
from ._run import VerifyError, checked_results, cli, main, run
from ._tasks import fib_cost, fib_of, subtasks

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_TASKS",
    "MAX_TASKS",
    "PROG",
    "VerifyError",
    "build_parser",
    "checked_results",
    "cli",
    "fib_cost",
    "fib_of",
    "main",
    "parse_tasks",
    "run",
    "subtasks",
]
