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

from ..base import poll
from ..base.errors import format_exception
from . import _wire
from ._ft import is_loss
from ._outcome import (
    Batch,
    Outcome,
    Tag,
    TaskError,
    call,
    describe_error,
    sendable_batch,
    short_repr,
)

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
) -> tuple[Batch, float]:
    """Run a chunk of ``(index, task)``; return ``(outcomes, busy_seconds)``.

    The outcomes are a :class:`Batch` that says when the chunk began and when
    each task ended (wall-clock, ``time.time()``), for the journal and the
    trace: tasks run back to back, so each begins where the one before ended.
    """
    outcomes = Batch()
    outcomes.rank, outcomes.host = rank, host
    ends: list[float] = []
    outcomes.ends = ends
    begin = time.perf_counter()
    outcomes.start = time.time()
    for index, task in chunk:
        value, exc = call(fn, task)
        ends.append(time.time())
        error = None if exc is None else describe_error(exc, index, task, rank, host)
        outcomes.append((index, value, error))
    return outcomes, time.perf_counter() - begin


def serve_dynamic(comm, root: int) -> None:
    """Serve chunks until the root says stop (``None``)."""
    rank, host = comm.Get_rank(), socket.gethostname()
    backoff = poll.Backoff()
    setup = _wire.received(comm, poll.recv(comm, root, Tag.SETUP, backoff=backoff), root)
    if setup is None:
        return  # not needed: more ranks than cores or than tasks
    fn = prepare(setup)
    while True:
        chunk = _wire.received(comm, poll.recv(comm, root, Tag.TASK, backoff=backoff), root)
        if chunk is None:
            return
        outcomes, busy = run_chunk(fn, chunk, rank, host)
        send_outcomes(comm, root, outcomes, busy, chunk)
        backoff.reset()


def send_outcomes(
    comm, root: int, outcomes: Batch, busy: float, chunk: Sequence[tuple[int, Any]]
) -> None:
    """Send the outcomes of ``chunk`` to the root; what cannot be sent becomes an error.

    mpi4py pickles before sending, so after a pickling error nothing was sent:
    send what can be, and an error in place of each part that cannot. A
    message MPI refuses (too large for this MPI) fails its tasks the same way.
    """
    from mpi4py import MPI

    rank, host = comm.Get_rank(), socket.gethostname()
    try:
        _wire.send(comm, (outcomes, busy), root, Tag.RESULT)
        return
    except (pickle.PicklingError, TypeError, AttributeError):
        outcomes = sendable_batch(outcomes, chunk, rank, host)
    except MPI.Exception as exc:
        if is_loss(exc):
            raise
        why = f"the result could not be sent to the root: {exc.Get_error_string()}"
        failed: list[Outcome] = [
            (i, None, TaskError(i, short_repr(task), rank, host, why, ""))
            for (i, _, _), (_, task) in zip(outcomes, chunk)
        ]
        outcomes = Batch.like(outcomes, failed)
    _wire.send(comm, (outcomes, busy), root, Tag.RESULT)


def serve_static(comm, root: int) -> None:
    """Run this rank's share, wait for the slowest rank, then gather at once."""
    mine = _wire.received(comm, comm.scatter(None, root=root), root)
    outcomes: list[Outcome] = []
    busy = 0.0
    if mine is not None:
        *setup, chunk = mine
        rank, host = comm.Get_rank(), socket.gethostname()
        batch, busy = run_chunk(prepare(tuple(setup)), chunk, rank, host)
        # The gather is collective: a part that cannot be pickled must not
        # fail on this rank alone.
        outcomes = sendable_batch(batch, chunk, rank, host)
    poll.barrier(comm)
    parcel = _wire.Parcel((outcomes, busy))
    comm.gather(parcel.header, root=root)
    parcel.send(comm, root)
