"""The farm's options, checked alike on every rank before anything starts."""

from __future__ import annotations

import difflib
import enum
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from ._outcome import Errors, Schedule
from ._start import FarmUsageError

E = TypeVar("E", bound=enum.Enum)


def check_options(
    comm,
    *,
    errors: Any,
    schedule: Any,
    root: Any,
    fault_tolerant: bool,
    task_timeout: Any,
    chunksize: Any,
    retries: Any,
    resume: Any,
    grace: Any,
    cores: Any = None,
) -> tuple[Errors, Schedule]:
    """Raise ``FarmUsageError`` for a bad option; return the errors mode and schedule.

    Every rank passes the same options, so every rank raises the same error.
    """
    errors_mode = _choice(Errors, errors, "errors")
    dynamic = _choice(Schedule, schedule, "schedule") is Schedule.DYNAMIC
    if not is_rank(root, comm):
        raise FarmUsageError(
            f"root must be a rank of the communicator, 0 to {comm.Get_size() - 1}, not {root!r}"
        )
    if fault_tolerant and not dynamic:
        raise FarmUsageError("fault tolerance needs the dynamic schedule")
    if task_timeout is not None and not dynamic:
        raise FarmUsageError(
            "task_timeout needs the dynamic schedule: a static share is not watched task by task"
        )
    if task_timeout is not None and not 0 < task_timeout < float("inf"):
        raise FarmUsageError(f"task_timeout must be a positive number, not {task_timeout!r}")
    if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
        raise FarmUsageError(f"chunksize must be a whole number of at least 1, not {chunksize!r}")
    if cores is not None and (not isinstance(cores, int) or cores < 1):
        raise FarmUsageError(f"cores must be a whole number of at least 1, not {cores!r}")
    if retries < 0:
        raise FarmUsageError(f"retries must not be negative, not {retries}")
    if retries and not dynamic:
        raise FarmUsageError("retries need the dynamic schedule")
    if resume not in (False, True, "failed"):
        raise FarmUsageError(f"resume must be True, False or 'failed', not {resume!r}")
    if grace is not None and grace < 0:
        raise FarmUsageError(f"grace must not be negative, not {grace}")
    return errors_mode, Schedule.DYNAMIC if dynamic else Schedule.STATIC


def _choice(kind: type[E], value: Any, name: str) -> E:
    """Return ``kind(value)``, or raise ``FarmUsageError`` naming the choices."""
    try:
        return kind(value)
    except ValueError:
        choices = " or ".join(repr(c.value) for c in kind)
        raise FarmUsageError(f"{name} must be {choices}, not {value!r}") from None


def is_rank(root: Any, comm) -> bool:
    """Return whether ``root`` is a rank of ``comm``."""
    return isinstance(root, int) and not isinstance(root, bool) and 0 <= root < comm.Get_size()


def unknown_options(unknown: dict[str, Any], accepting: Callable[..., Any]) -> str:
    """Say which keyword arguments ``accepting`` does not take, with a guess."""
    known = [
        name
        for name, parameter in inspect.signature(accepting).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    words = []
    for name in unknown:
        guess = difflib.get_close_matches(name, known, n=1)
        words.append(f"{name} (did you mean {guess[0]}?)" if guess else name)
    return f"unknown option(s): {', '.join(words)}; the farm takes {', '.join(known)}"


def check_or_defer(
    comm, unknown: dict[str, Any], accepting: Callable[..., Any], **options: Any
) -> tuple[Errors, Schedule, str | None]:
    """Check the options; return the errors mode, the schedule and the problem.

    A bad option is returned, not raised, when the root is a rank: the farm
    then starts and raises it on every rank, so that a bad option on one rank
    alone does not leave the others waiting for it. A root that is not a rank
    is raised at once.
    """
    try:
        if unknown:
            raise FarmUsageError(unknown_options(unknown, accepting))
        return (*check_options(comm, **options), None)
    except FarmUsageError as exc:
        if not is_rank(options["root"], comm):
            raise
        return Errors.RAISE, Schedule.DYNAMIC, str(exc)
