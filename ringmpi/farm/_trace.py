"""A picture of the run: one span per task, on the root's clock.

Every chunk's outcomes say when the chunk began and when each task ended (a
``Batch``; tasks run back to back, so each begins where the one before
ended). With ``Farm(..., trace=True)`` the root also notes when it sent each
chunk and when the outcomes came back, and maps the clocks of other ranks
onto its own with offsets measured when the farm starts (a few ping-pongs per
worker; the one with the shortest round trip wins), so the picture holds
across nodes whose clocks differ.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from ..base import poll
from ._outcome import Outcome, Tag, TaskSpan

#: Ping-pongs per worker when measuring its clock offset.
ROUNDS = 4


def clock_offsets(comm, root: int) -> dict[int, float]:
    """Measure each rank's ``time.time()`` minus the root's; collective.

    Returns:
        On the root, the offset of every rank (its own 0); elsewhere ``{}``.
    """
    rank = comm.Get_rank()
    if rank != root:
        for _ in range(ROUNDS):
            poll.recv(comm, root, Tag.CLOCK)
            comm.send(time.time(), dest=root, tag=Tag.CLOCK)
        return {}
    offsets = {root: 0.0}
    for other in range(comm.Get_size()):
        if other == root:
            continue
        best = None
        for _ in range(ROUNDS):
            sent = time.time()
            comm.send(None, dest=other, tag=Tag.CLOCK)
            theirs = comm.recv(source=other, tag=Tag.CLOCK)
            back = time.time()
            if best is None or back - sent < best[0]:
                best = (back - sent, theirs - (sent + back) / 2)
        assert best is not None
        offsets[other] = best[1]
    return offsets


class Tracer:
    """Turns what the root sees into :class:`TaskSpan` records.

    Args:
        spans: Where the records go (``FarmStats.trace``).
        hosts: Host of each rank.
        offsets: Each rank's clock minus the root's.
        origin: The root's ``time.time()`` when the farm began.
    """

    def __init__(
        self, spans: list[TaskSpan], hosts: Sequence[str], offsets: dict[int, float], origin: float
    ):
        self.spans = spans
        self.hosts = hosts
        self.offsets = offsets
        self.origin = origin
        self.chunks = 0
        self.lock = threading.Lock()
        #: task index -> (chunk number, when it was handed out)
        self.sent: dict[int, tuple[int, float]] = {}

    def now(self) -> float:
        return time.time() - self.origin

    def handed_out(self, rank: int, indices: Sequence[int]) -> None:
        """Note that ``rank`` was just given the chunk of tasks ``indices``."""
        with self.lock:
            sent = (self.chunks, self.now())
            self.chunks += 1
            for index in indices:
                self.sent[index] = sent

    def came_back(self, rank: int, outcomes: Sequence[Outcome]) -> None:
        """Record the spans of the tasks ``rank`` just reported (a ``Batch``)."""
        received = self.now()
        start, ends = getattr(outcomes, "start", None), getattr(outcomes, "ends", None)
        if start is None or ends is None:
            return
        shift = self.origin + self.offsets.get(rank, 0.0)
        host = self.hosts[rank] if rank < len(self.hosts) else "?"
        with self.lock:
            for (index, _, _), end in zip(outcomes, ends):
                chunk, dispatched = self.sent.pop(index, (-1, received))
                span = TaskSpan(
                    index, rank, host, start - shift, end - shift, chunk, dispatched, received
                )
                self.spans.append(span)
                start = end
