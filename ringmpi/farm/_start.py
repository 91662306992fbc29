"""Starting a farm: every rank joins, within a bound and without spinning.

A rank that never calls the farm (the usual mistake: ``farm_map`` inside
``if rank == 0:``) would leave the others waiting for ever in a collective;
a root that starts late would leave the workers spinning in one. Instead:

* every worker sends ``Tag.JOIN`` to the root on the caller's communicator;
  the root, once it has every one, answers ``Tag.GO``; all wait with sleeps,
  then duplicate the communicator (quick: everyone is there);
* if a note is missing when the bound passes, the root names the ranks
  whose ``JOIN`` never came, and every rank ends with one error line;
* once everyone is in, the root checks what only it can (the tasks, that the
  function pickles) and sends ``Tag.START`` to each worker: ``(None, trace)``
  to go on (``trace``: whether to time each task), or ``(error, trace)``
  with the error that every rank then raises alike.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

from ..base import poll
from ..base.errors import EXIT_USAGE, RingmpiError
from ._outcome import Tag


class FarmJoinError(RingmpiError):
    """Not every rank of the communicator called the farm in time."""

    def __init__(self, message: str, quiet: bool = False):
        super().__init__(message)
        self.quiet = quiet


#: Seconds a worker waits for the root past the join timeout.
ROOT_FIRST = 2.0


class FarmUsageError(RingmpiError, ValueError):
    """The farm was called wrongly; raised alike on every rank of the farm."""

    exit_code = EXIT_USAGE
    collective = True


#: True on the root while ``python -m ringmpi.run`` runs a script there: the
#: other ranks of ``COMM_WORLD`` wait for its executors and pools, not farms.
hosted = [False]


def refuse_if_hosted(user) -> None:
    """Raise ``FarmUsageError`` for a farm over ``COMM_WORLD`` in a hosted script."""
    from mpi4py import MPI

    if hosted[0] and user == MPI.COMM_WORLD:
        raise FarmUsageError(
            "under ringmpi.run the script runs on rank 0 alone, so a farm over COMM_WORLD "
            "would wait for ranks that never call it: use FarmExecutor or FarmPool "
            "(their map does what farm_map does)"
        )


def join(user, root: int, timeout: float | None):
    """Return a private duplicate of ``user`` once every rank has joined.

    Raises:
        FarmJoinError: Not every rank joined within ``timeout`` seconds.
    """
    return join_telling(user, root, timeout)[0]


def join_telling(user, root: int, timeout: float | None, problem: str | None = None):
    """:func:`join`, each worker telling the root its ``problem`` (a bad option).

    Returns:
        The private duplicate, and on the root the first problem a worker told
        (None elsewhere).

    Raises:
        FarmJoinError: Not every rank joined within ``timeout`` seconds.
    """
    rank, size = user.Get_rank(), user.Get_size()
    backoff = poll.Backoff()
    deadline = None if timeout is None else time.monotonic() + timeout
    told: dict[int, str | None] = {}
    if rank == root:
        waiting = [r for r in range(size) if r != root]
        while waiting:
            waiting = [r for r in waiting if not _take(user, r, Tag.JOIN, told)]
            if waiting and deadline is not None and time.monotonic() > deadline:
                why = (
                    f"rank(s) {', '.join(map(str, waiting))} of {size} did not call the farm "
                    f"with root {root} within {timeout:g} s: every rank of the communicator "
                    "must call it, with the same root (see RINGMPI_JOIN_TIMEOUT)"
                )
                # The ranks that did join hear it and say nothing: one line.
                joined = [r for r in range(size) if r != root and r not in waiting]
                for request in [user.isend(why, dest=r, tag=Tag.GO) for r in joined]:
                    poll.wait(request, backoff)
                raise FarmJoinError(why)
            if waiting:
                backoff.pause()
        for request in [user.isend(None, dest=r, tag=Tag.GO) for r in range(size) if r != root]:
            poll.wait(request, backoff)
    else:
        poll.wait(user.isend(problem, dest=root, tag=Tag.JOIN), backoff)
        # A little longer than the root waits, so that a root that is there
        # always speaks first.
        end = None if deadline is None else deadline + ROOT_FIRST
        while (go := poll.improbe(user, root, Tag.GO, None, backoff)) is None:
            if end is not None and time.monotonic() > end:
                # Every worker times out alike: the first one speaks.
                speaker = 1 if root == 0 else 0
                raise FarmJoinError(
                    f"the farm's root, rank {root}, did not let it start within {timeout:g} s: "
                    "every rank of the communicator must call it, with the same root",
                    quiet=rank != speaker,
                )
        why = go.recv()
        if why is not None:
            raise FarmJoinError(why, quiet=True)  # the root reports it
    # Everyone is here: a blocking duplicate is quick now.
    first = next((p for _, p in sorted(told.items()) if p is not None), None)
    return user.Dup(), first


def _take(user, source: int, tag: int, told: dict[int, str | None]) -> bool:
    """Receive the note ``source`` sent with ``tag``, if it is there."""
    if not user.iprobe(source, tag):
        return False
    told[source] = user.recv(source=source, tag=tag)
    return True


class Unusable:
    """Tasks the root was given but cannot use, and why; ``error``: reading
    them raised it (the root raises it again, the workers return at once)."""

    def __init__(self, why: str, error: BaseException | None = None):
        self.why: str = why if error is None else Abandon(why)
        self.error = error


class Abandon(str):
    """A problem that ends the farm before it begins without an error on the
    workers: the root's own tasks failed, and the root raises that."""


class FarmAbandoned(RingmpiError):
    """Raised by :func:`start` for an :class:`Abandon`; the farm returns None."""


def check_setup(fn: Any, setup: Any, tasks: Any) -> str | None:
    """Return why the root cannot start the farm, or None."""
    if isinstance(tasks, Unusable):
        return tasks.why
    if tasks is None:
        return "the root passed tasks=None: give the tasks on the root (others may pass None)"
    if not callable(fn):
        return f"the farm's function must be callable on the root, not {fn!r}"
    try:
        pickle.dumps(setup, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        return (
            f"the function {name} (or its initializer or initargs) is not picklable, so "
            f"it cannot be sent to the workers; define it at module level "
            f"({type(exc).__name__}: {exc})"
        )
    return None


def start(comm, root: int, problem: str | None = None, trace: bool = False) -> bool:
    """Tell every worker to go on, or raise ``problem`` on every rank alike.

    Returns:
        Whether the run is traced (the root's ``trace``, on every rank).
    """
    if comm.Get_rank() == root:
        requests = [
            comm.isend((problem, trace), dest=r, tag=Tag.START)
            for r in range(comm.Get_size())
            if r != root
        ]
        for request in requests:
            poll.wait(request)
    else:
        problem, trace = poll.recv(comm, root, Tag.START)
    if isinstance(problem, Abandon):
        raise FarmAbandoned(problem)
    if problem is not None:
        raise FarmUsageError(problem)
    return trace
