"""The root's side of the static schedule: scatter the shares, compute, gather."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..base import poll
from . import _shared, _wire
from ._outcome import Batch, FarmStats, Outcome, sendable_batch
from ._shared import unshare
from ._trace import Tracer
from ._worker import Setup, prepare, run_chunk


def run_static(
    comm,
    root: int,
    host: str,
    tasks: Sequence[Any],
    shares: dict[int, list[int]],
    setup: Setup,
    stats: FarmStats,
    tracer: Tracer | None = None,
) -> Iterator[list[Outcome]]:
    """The root of the static schedule: scatter shares, compute, gather.

    Args:
        shares: Task indices for each computing rank (the root included when
            it computes).
    """
    sendobj: list[Any] = [None] * comm.Get_size()
    parcels: dict[int, _wire.Parcel] = {}
    mine = None
    for rank, indices in shares.items():
        share = (*setup, [(i, tasks[i]) for i in indices])
        if rank == root:
            mine = share
        else:  # shares of any size: large ones follow the scatter
            parcels[rank] = _wire.Parcel(share)
            sendobj[rank] = parcels[rank].header
        if tracer is not None:
            tracer.handed_out(rank, indices)
    comm.scatter(sendobj, root=root)
    sends = [r for rank, parcel in parcels.items() for r in parcel.isend(comm, rank)]
    outcomes: list[Outcome] = []
    busy = 0.0
    if mine is not None:
        outcomes, busy = run_chunk(prepare(setup), mine[3], root, host)
        outcomes = sendable_batch(outcomes, mine[3], root, host)
        if _shared.attached():  # no result may point into the window freed after
            outcomes = Batch.like(outcomes, [(i, unshare(v), e) for i, v, e in outcomes])
    for request in sends:
        poll.wait(request)
    del parcels, sends
    poll.barrier(comm)
    gathered = comm.gather(None, root=root)
    gathered[root] = (outcomes, busy)
    for rank, part in enumerate(gathered):
        outcomes, busy = _wire.received(comm, part, rank)
        gathered[rank] = None
        if rank in shares:
            worker = stats.worker(rank)
            worker.tasks += len(outcomes)
            worker.busy += busy
            if tracer is not None:
                tracer.came_back(rank, outcomes)
        yield outcomes
