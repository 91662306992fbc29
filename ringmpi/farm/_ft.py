"""Fault tolerance under ULFM: which ranks failed, agreeing on a loss, leaving together.

Used only when the job runs with ``mpiexec --with-ft ulfm`` and the farm was
asked to be fault tolerant; the farm's private communicator then returns
errors instead of aborting. Every farm ends in :func:`leave`: a barrier, or
under ULFM an agreement on any loss.
"""

from __future__ import annotations

from ..base import poll
from ..base.errors import mark_degraded


def failure_classes() -> tuple[int, ...]:
    """The MPI error classes that mean a rank was lost."""
    from mpi4py import MPI

    return tuple(
        getattr(MPI, name)
        for name in ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING", "ERR_REVOKED")
        if hasattr(MPI, name)
    )


def is_loss(exc: Exception) -> bool:
    """Return whether an ``MPI.Exception`` reports a lost rank."""
    return exc.Get_error_class() in failure_classes()  # type: ignore[attr-defined]


def acknowledge_failed(comm) -> list[int]:
    """Acknowledge the failures seen so far and return the failed ranks."""
    comm.Ack_failed()
    failed, everyone = comm.Get_failed(), comm.Get_group()
    try:
        return list(failed.Translate_ranks(list(range(failed.Get_size())), everyone))
    finally:
        failed.Free()
        everyone.Free()


def agree_on_failures(comm, failed: bool) -> None:
    """Let every survivor learn whether a rank was lost (ULFM agreement).

    After a loss, ``MPI_Finalize`` can hang (open-mpi/ompi#11404), so
    :func:`ringmpi.base.errors.mark_degraded` tells the harness to leave without it.
    """
    from mpi4py import MPI

    try:
        failed = not comm.Agree(0 if failed else 1)
    except MPI.Exception:
        failed = True
    if failed:
        mark_degraded()


def leave(comm, ft: bool, failed: bool, backoff: poll.Backoff | None = None) -> None:
    """Leave the farm together.

    Fault tolerant, the root holds every live worker until the end and then
    releases it, so no barrier (which a lost rank would fail) is needed; the
    survivors agree instead on whether a rank was lost.
    """
    if ft:
        agree_on_failures(comm, failed)
    else:
        poll.barrier(comm, backoff)
