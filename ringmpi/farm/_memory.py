"""A memory limit for each task (``memory_limit=``): see :mod:`ringmpi.base.memory`.

The function the workers apply is wrapped in :class:`Limited`, so the limit
travels with it and holds wherever a task runs (a worker, or the root when it
computes alone, in either schedule). While a task runs, its process may hold
at most the limit of private memory; an allocation past it raises
``MemoryError`` in the task, which fails that task alone, naming the limit.
The process goes on with its next task once the failed one has let go of
what it held.

Each rank tells the root, as the farm starts, what it already holds; a limit
that leaves a rank no room to run a task is refused before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..base.memory import format_size, held, limited, parse_size, why_unlimitable

#: Room a task needs past what its process holds when it starts.
HEADROOM = 32 << 20


class Limited:
    """``fn``, each call under a memory limit of ``limit`` bytes."""

    def __init__(self, fn: Callable[[Any], Any], limit: int):
        self.fn, self.limit = fn, limit
        # What the farm's messages call the function by.
        self.__qualname__ = getattr(fn, "__qualname__", repr(fn))
        self.__name__ = getattr(fn, "__name__", self.__qualname__)

    def __call__(self, task: Any) -> Any:
        try:
            with limited(self.limit):
                return self.fn(task)
        except MemoryError as exc:
            # Raised with the limit lifted again; the task's own error is the cause.
            shown = f" ({exc})" if str(exc) else ""
            raise MemoryError(f"past the memory limit of {format_size(self.limit)}{shown}") from exc

    def __reduce__(self):
        return (Limited, (self.fn, self.limit))


def wrap(fn: Callable[[Any], Any], limit: int | None) -> Callable[[Any], Any]:
    """Return ``fn`` under ``limit`` (bytes; None: no limit)."""
    return fn if limit is None else Limited(fn, limit)


def check_limit(value: Any) -> int | None:
    """Return the limit in bytes (None for none).

    Raises:
        ValueError: Not a size, or this platform cannot limit memory.
    """
    if value is None:
        return None
    try:
        limit = parse_size(value)
    except ValueError as exc:
        raise ValueError(f"memory_limit: {exc}") from None
    why = why_unlimitable()
    if why is not None:
        raise ValueError(why)
    return limit


def room_problem(limit: int | None, holding: Sequence[tuple[int, int | None]]) -> str | None:
    """Return why ``limit`` leaves no room for a task, or None.

    Args:
        holding: ``(rank, bytes it holds)`` of each rank that computes.
    """
    if limit is None:
        return None
    known = [(used, rank) for rank, used in holding if used is not None]
    if not known:
        return None
    used, rank = max(known)
    if limit >= used + HEADROOM:
        return None
    return (
        f"the memory limit of {format_size(limit)} leaves no room for a task: rank {rank} "
        f"already holds {format_size(used)} before its first task; give at least "
        f"{format_size(used + HEADROOM)}"
    )


__all__ = ["HEADROOM", "Limited", "check_limit", "held", "room_problem", "wrap"]
