"""The worker's side of the farm: receive the function, run chunks, send outcomes.

Everything a worker knows lives in the locals of its serve loop; the function
and the initializer arrive in the SETUP message.
"""

from __future__ import annotations

import pickle
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import poll
from ..errors import format_exception
from ._outcome import Batch, Outcome, Tag, call, describe_error, sendable

Setup = tuple[Callable[[Any], Any], "Callable[..., Any] | None", tuple[Any, ...]]


def prepare(setup: Setup) -> Callable[[Any], Any]:
    """Run the initializer of ``setup`` and return the function to apply.

    An initializer that fails makes every task of this rank fail with its
    error, so that the root hears of it (a worker that died would not say).
    """
    fn, initializer, initargs = setup
    if initializer is None:
        return fn
    try:
        initializer(*initargs)
    except Exception as exc:
        message = f"the initializer failed: {type(exc).__name__}: {exc}\n{format_exception(exc)}"

        def failed(_task: Any) -> Any:
            raise RuntimeError(message)

        return failed
    return fn


def run_chunk(
    fn: Callable[[Any], Any], chunk: Sequence[tuple[int, Any]], rank: int, host: str
) -> tuple[list[Outcome], float]:
    """Run a chunk of ``(index, task)``; return ``(outcomes, busy_seconds)``.

    The outcomes are a :class:`Batch` that says when each task ended.
    """
    outcomes = Batch()
    outcomes.rank, outcomes.host, outcomes.start = rank, host, time.time()
    ends = outcomes.ends = []
    begin = time.perf_counter()
    for index, task in chunk:
        value, exc = call(fn, task)
        error = None if exc is None else describe_error(exc, index, task, rank, host)
        outcomes.append((index, value, error))
        ends.append(time.time())
    return outcomes, time.perf_counter() - begin


def serve_dynamic(comm, root: int) -> None:
    """Serve chunks until the root says stop (``None``)."""
    rank, host = comm.Get_rank(), socket.gethostname()
    backoff = poll.Backoff()
    setup = poll.recv(comm, root, Tag.SETUP, backoff=backoff)
    if setup is None:
        return  # not needed: more ranks than cores or than tasks
    fn = prepare(setup)
    while True:
        chunk = poll.recv(comm, root, Tag.TASK, backoff=backoff)
        if chunk is None:
            return
        outcomes, busy = run_chunk(fn, chunk, rank, host)
        try:
            comm.send((outcomes, busy), dest=root, tag=Tag.RESULT)
        except (pickle.PicklingError, TypeError, AttributeError):
            # mpi4py pickles before sending, so nothing was sent: send what
            # can be, and an error in place of each part that cannot.
            outcomes = Batch.like(outcomes, [sendable(o, rank, host) for o in outcomes])
            comm.send((outcomes, busy), dest=root, tag=Tag.RESULT)
        backoff.reset()


def serve_static(comm, root: int) -> None:
    """Run this rank's share, wait for the slowest rank, then gather at once."""
    mine = comm.scatter(None, root=root)
    outcomes: list[Outcome] = []
    busy = 0.0
    if mine is not None:
        *setup, chunk = mine
        outcomes, busy = run_chunk(
            prepare(tuple(setup)), chunk, comm.Get_rank(), socket.gethostname()
        )
        # The gather is collective: a part that cannot be pickled must not
        # fail on this rank alone.
        outcomes = Batch.like(
            outcomes, [sendable(o, comm.Get_rank(), socket.gethostname()) for o in outcomes]
        )
    poll.barrier(comm)
    comm.gather((outcomes, busy), root=root)
