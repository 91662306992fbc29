"""The root's side of the dynamic schedule: hand out chunks, take in outcomes.

A :class:`Dispatcher` owns the chunks still to hand out, the work in flight on
each rank, the parked and spare ranks, and the sends not yet complete; its
recovery from lost workers and its deadlines are here too. Under ULFM a
lost worker's chunk goes back to the front of the queue and a parked or spare
rank takes it; a chunk that runs past ``task_timeout`` per task raises
``FarmTimeout``. The static schedule is :func:`._static.run_static`.
"""

from __future__ import annotations

import logging
import pickle
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..base import poll
from ..base.errors import RingmpiError
from . import _ft, _wire
from ._outcome import (
    Batch,
    FarmStats,
    FarmTimeout,
    LostWorker,
    Outcome,
    Tag,
    sendable_batch,
    short_repr,
)
from ._stop import Stop
from ._trace import Tracer
from ._worker import Setup, prepare, run_chunk

log = logging.getLogger("ringmpi.farm")


class FarmSendError(RingmpiError):
    """MPI refused to send a chunk of tasks (too large for this MPI, say)."""


class Dispatcher:
    """The root of the dynamic schedule: workers pull chunks as they finish.

    Args:
        comm: The farm's private communicator.
        root: This rank.
        host: This rank's host.
        tasks: All tasks, by index.
        chunks: Chunks of task indices, in the order to hand them out.
        setup: ``(fn, initializer, initargs)`` for the workers.
        stats: Filled in as outcomes arrive.
        ft: Whether lost workers are survived (ULFM on).
        stop_on_error: Stop handing out work at the first failed task.
        task_timeout: Seconds a task may run before ``FarmTimeout``.
        retries: Run a task that raised again, up to this many times.
        stop: On a stop signal, hand out nothing more and wait for the
            chunks in flight up to the grace period (then ``abandoned``).
    """

    def __init__(
        self,
        comm,
        root: int,
        host: str,
        tasks: Sequence[Any],
        chunks: list[list[int]],
        setup: Setup,
        stats: FarmStats,
        *,
        ft: bool,
        stop_on_error: bool,
        task_timeout: float | None,
        tracer: Tracer | None = None,
        retries: int = 0,
        stop: Stop | None = None,
        watch: Callable[[], None] | None = None,
    ):
        self.comm, self.root, self.host = comm, root, host
        self.tasks = tasks
        self.chunks = deque(chunks)
        self.setup = setup
        self.stats = stats
        self.ft = ft
        self.stop_on_error = stop_on_error
        self.task_timeout = task_timeout
        self.tracer = tracer
        self.failed = False
        #: rank -> (task indices, when they were sent)
        self.in_flight: dict[int, tuple[list[int], float]] = {}
        #: fault tolerant: live workers with nothing to do yet
        self.parked: list[int] = []
        #: fault tolerant: ranks with no free core, waiting to replace a lost one
        self.spares: list[int] = []
        self.requests: list[Any] = []
        self.lock = threading.Lock()
        self.local: queue.SimpleQueue = queue.SimpleQueue()
        self.helper: threading.Thread | None = None
        self.helper_error: BaseException | None = None
        #: the chunk the root's thread is computing, and since when
        self.computing_here: tuple[list[int], float] | None = None
        self.backoff = poll.Backoff()
        self.retries = retries
        #: task index -> failed attempts that were retried
        self.attempts: dict[int, int] = {}
        self.stop = stop
        #: stopped on a signal with chunks still in flight
        self.abandoned = False
        #: called while nothing arrives; raises to end the run (the journal's check)
        self.watch = watch

    # -- handing out ------------------------------------------------------------

    def start(self, active: Sequence[int], idle: Sequence[int], root_computes: bool) -> None:
        """Send the set-up and a first chunk to each worker; release the idle."""
        comm = self.comm
        # Without fault tolerance, ranks with no free core are released now;
        # with it, they wait as spares to replace a worker that is lost.
        self.spares = list(idle) if self.ft else []
        for rank in idle:
            setup = self.setup if self.ft else None
            self.requests.append(_wire.isend(comm, setup, rank, Tag.SETUP))
        for rank in active:
            self.requests.append(_wire.isend(comm, self.setup, rank, Tag.SETUP))
            self.dispatch(rank)
        if root_computes:
            self.helper = threading.Thread(target=self._compute_here, daemon=True)
            self.helper.start()

    def take(self) -> list[int] | None:
        """Return the next chunk to hand out, or None when there is none."""
        with self.lock:
            return self.chunks.popleft() if self.chunks and not self.failed else None

    def payload(self, indices: list[int]) -> list[tuple[int, Any]]:
        return [(i, self.tasks[i]) for i in indices]

    def dispatch(self, rank: int) -> None:
        """Give ``rank`` its next chunk, or park or release it."""
        indices = self.take()
        if indices is not None:
            self.in_flight[rank] = (indices, time.perf_counter())
            if self.tracer is not None:
                self.tracer.handed_out(rank)
            self.requests.append(self._send_chunk(rank, indices))
        elif self.ft:
            self.parked.append(rank)
        else:
            self.requests.append(self.comm.isend(None, rank, Tag.TASK))

    def _send_chunk(self, rank: int, indices: list[int]):
        from mpi4py import MPI

        shown = ", ".join(f"{i} ({short_repr(self.tasks[i], 40)})" for i in indices[:3])
        try:
            return _wire.isend(self.comm, self.payload(indices), rank, Tag.TASK)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise FarmSendError(
                f"task(s) {shown} cannot be pickled to send to a worker: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        except MPI.Exception as exc:
            if self.ft and _ft.is_loss(exc):
                raise
            raise FarmSendError(
                f"task(s) {shown} could not be sent to rank {rank}: {exc.Get_error_string()}"
            ) from None

    def _compute_here(self) -> None:
        """The root's helper thread: compute chunks on the root's spare core."""
        try:
            fn = prepare(self.setup)
            while (indices := self.take()) is not None:
                self.computing_here = (indices, time.perf_counter())
                if self.tracer is not None:
                    self.tracer.handed_out(self.root)
                payload = self.payload(indices)
                outcomes, busy = run_chunk(fn, payload, self.root, self.host)
                self.local.put((sendable_batch(outcomes, payload, self.root, self.host), busy))
                self.computing_here = None
        except BaseException as exc:  # never lose a chunk silently
            self.helper_error = exc

    def _helping(self) -> bool:
        return self.helper is not None and self.helper.is_alive()

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

    # -- taking in --------------------------------------------------------------

    def outcomes(self) -> Iterator[list[Outcome]]:
        """Yield each chunk's outcomes as it arrives, until all are in."""
        while self._pending():
            if self.stop is not None and not self.stop.requested:
                self._heed_workers_stop()
            if self.stop is not None and self.stop.requested:
                self.failed = True  # hand out nothing more
                if self.stop.expired():
                    self.abandoned = True
                    return
            if self.chunks and not self.failed and not self._workers_left():
                # Every worker is lost: the root finishes the work itself.
                indices = self.chunks.popleft()
                self.local.put(
                    run_chunk(prepare(self.setup), self.payload(indices), self.root, self.host)
                )
                self.stats.worker(self.root)
            arrived = self.take_in()
            for outcomes in arrived:
                if self.retries:
                    outcomes = self._retry(outcomes)
                if self.stop_on_error and any(
                    error for i, _, error in outcomes if i not in getattr(outcomes, "retried", ())
                ):
                    self.failed = True
                yield outcomes

    def _heed_workers_stop(self) -> None:
        """Stop as the root would if a worker says a stop signal reached it."""
        from mpi4py import MPI

        assert self.stop is not None
        try:
            message = self.comm.improbe(MPI.ANY_SOURCE, Tag.STOP)
            if message is not None:
                self.stop.notice(message.recv())
        except MPI.Exception as exc:
            if not (self.ft and _ft.is_loss(exc)):
                raise

    def _retry(self, outcomes: list[Outcome]) -> Batch:
        """Queue the failed tasks of ``outcomes`` that have retries left.

        They go to the back of the queue, so another rank is likely to take
        them; they are marked ``retried`` so that their error is recorded but
        not reported.
        """
        batch = outcomes if isinstance(outcomes, Batch) else Batch.like(outcomes)
        retried = set()
        for index, _, error in batch:
            if error is not None and self.attempts.get(index, 0) < self.retries:
                self.attempts[index] = self.attempts.get(index, 0) + 1
                retried.add(index)
        if retried:
            with self.lock:
                self.chunks.extend([i] for i in sorted(retried))
            batch.retried = frozenset(retried)
        return batch

    def _pending(self) -> bool:
        return bool(
            self.in_flight
            or self._helping()
            or not self.local.empty()
            or (self.chunks and not self.failed)
        )

    def _workers_left(self) -> bool:
        return bool(self.in_flight or self.parked or self.spares or self._helping())

    def take_in(self) -> list[list[Outcome]]:
        """Take in what has arrived; check the root's thread, and the deadlines
        when nothing came."""
        arrived = self._receive()
        if self.helper_error is not None:
            raise RuntimeError("the root's compute thread failed") from self.helper_error
        if arrived:
            self.backoff.reset()
        else:
            if self.watch is not None:
                self.watch()
            self.check_deadlines()
        return arrived

    def _receive(self) -> list[list[Outcome]]:
        """Take in what has arrived from the workers and the root's thread."""
        from mpi4py import MPI

        arrived = []
        status = MPI.Status()
        try:
            message = poll.improbe(self.comm, MPI.ANY_SOURCE, Tag.RESULT, status, self.backoff)
            # Every result already here first, each worker handed its next
            # chunk, and only then the journal and the caller's loop.
            while message is not None:
                rank = status.Get_source()
                outcomes, busy = _wire.received(self.comm, message.recv(), rank)
                self.on_result(rank, outcomes, busy)
                arrived.append(outcomes)
                message = self.comm.improbe(MPI.ANY_SOURCE, Tag.RESULT, status)
        except MPI.Exception as exc:
            if not (self.ft and _ft.is_loss(exc)):
                raise
            self.recover()
        while not self.local.empty():
            outcomes, busy = self.local.get()
            self._count(self.root, outcomes, busy)
            arrived.append(outcomes)
        return arrived

    def on_result(self, rank: int, outcomes: list[Outcome], busy: float) -> None:
        """Note ``rank``'s finished chunk and hand it the next one."""
        self.in_flight.pop(rank)
        self._count(rank, outcomes, busy)
        self.dispatch(rank)

    def _count(self, rank: int, outcomes: list[Outcome], busy: float) -> None:
        worker = self.stats.worker(rank)
        worker.tasks += len(outcomes)
        worker.busy += busy
        if self.tracer is not None:
            self.tracer.came_back(rank, outcomes)

    def drain(self) -> None:
        """Release every waiting worker and complete every send."""
        from mpi4py import MPI

        if self.helper is not None:
            self.helper.join()
        for rank in self.parked + self.spares:
            self.requests.append(self.comm.isend(None, rank, Tag.TASK))
        for request in self.requests:
            try:
                poll.wait(request, self.backoff)
            except MPI.Exception:
                if not self.ft:
                    raise  # a send to a lost worker cannot complete


def timeout_message(dispatcher: Dispatcher, rank: int, indices: list[int], ran: float) -> str:
    tasks = dispatcher.tasks
    shown = ", ".join(f"{i} ({short_repr(tasks[i], 40)})" for i in indices[:3])
    host = dispatcher.stats.hosts[rank] if dispatcher.stats.hosts else "?"
    return (
        f"rank {rank}@{host} has run task(s) {shown} for {ran:.1f} s, "
        f"past the limit of {dispatcher.task_timeout:g} s per task"
    )
