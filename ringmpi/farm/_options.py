"""The farm's options, checked alike on every rank before anything starts."""

from __future__ import annotations

import enum
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
    if not isinstance(root, int) or not 0 <= root < comm.Get_size():
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
