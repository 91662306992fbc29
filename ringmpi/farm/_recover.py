"""The dispatcher's recovery and deadlines: requeue a lost worker's work, time out a chunk.

A mixin of :class:`~._root.Dispatcher` (and so of the open dispatcher): under
ULFM a lost worker's chunk goes back to the front of the queue and a parked or
spare rank takes it; a chunk that runs past ``task_timeout`` per task raises
``FarmTimeout``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from . import _ft
from ._outcome import FarmStats, FarmTimeout, LostWorker, short_repr

log = logging.getLogger("ringmpi.farm")


class Recovery:
    """Lost workers and deadlines of a :class:`~._root.Dispatcher`."""

    comm: Any
    root: int
    tasks: Sequence[Any]
    chunks: deque[list[int]]
    stats: FarmStats
    task_timeout: float | None
    in_flight: dict[int, tuple[list[int], float]]
    parked: list[int]
    spares: list[int]
    computing_here: tuple[list[int], float] | None

    def dispatch(self, rank: int) -> None:
        raise NotImplementedError

    def recover(self) -> None:
        """Requeue the work of lost workers and bring in spares (ULFM)."""
        known = {lost.rank for lost in self.stats.lost}
        for rank in _ft.acknowledge_failed(self.comm):
            if rank in known:
                continue
            indices = self.in_flight.pop(rank, ([], 0.0))[0]
            if indices:
                self.chunks.appendleft(indices)
            for pool in (self.parked, self.spares):
                if rank in pool:
                    pool.remove(rank)
            host = self.stats.hosts[rank] if self.stats.hosts else "?"
            self.stats.lost.append(LostWorker(rank, host, list(indices)))
            log.warning("lost worker rank %d@%s; requeued tasks %s", rank, host, indices)
        while self.chunks and (self.parked or self.spares):
            rank = self.parked.pop(0) if self.parked else self.spares.pop(0)
            self.stats.worker(rank)
            self.dispatch(rank)

    def check_deadlines(self) -> None:
        """Raise ``FarmTimeout`` if a rank has run its chunk past the limit."""
        if self.task_timeout is None:
            return
        now = time.perf_counter()
        running = list(self.in_flight.items())
        here = self.computing_here
        if here is not None:
            running.append((self.root, here))
        for rank, (indices, since) in running:
            if now - since > self.task_timeout * len(indices):
                raise FarmTimeout(timeout_message(self, rank, indices, now - since))


def timeout_message(dispatcher: Recovery, rank: int, indices: list[int], ran: float) -> str:
    tasks = dispatcher.tasks
    shown = ", ".join(f"{i} ({short_repr(tasks[i], 40)})" for i in indices[:3])
    host = dispatcher.stats.hosts[rank] if dispatcher.stats.hosts else "?"
    return (
        f"rank {rank}@{host} has run task(s) {shown} for {ran:.1f} s, "
        f"past the limit of {dispatcher.task_timeout:g} s per task"
    )
