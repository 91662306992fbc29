"""The root's engine: one loop that hands out tasks and takes in outcomes, for every interface.

``farm_map``/``Farm`` (the dynamic schedule), ``FarmExecutor`` and
``FarmPool`` all run on :class:`Engine`; the static schedule is
:func:`._static.run_static`. Data flow, on the root::

    source --tasks--> ready --chunks (TASK)--> workers' queues --+
      ^                 ^                                       | each worker reports
      |                 +-- given back (TAKE) <-----------------+ outcomes as its tasks
      |                 +-- retried, lost workers' tasks        | end (RESULT), every
      |                                                          | few ms, and which
    caller <-- outcomes (journal, progress, futures) <-- take_in +  task runs now

The engine's parts are objects passed in or made here, each with one job:
the *source* of tasks (a list cut into chunks up front, a lazy iterator
pulled a bounded way ahead, or the executor's queue), the *hooks* that tell
futures a task started or was cancelled, the :class:`~._worker.Runner` that
computes on the root's spare core, the journal's check (``watch``), the
:class:`~._stop.Stop`, and the :class:`~._trace.Tracer`. Each worker holds at
most ``DEPTH`` chunks; its tasks not yet started can be taken back (``TAKE``)
for a cancel, a stop, a failed run, or to feed an idle worker when nothing
else waits. A task's deadline counts from its own start, as its worker's
reports tell. Sends are released as they complete.
"""

from __future__ import annotations

import logging
import pickle
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..base import poll
from ..base.errors import RingmpiError, format_exception
from . import _ft, _shared, _stop, _wire
from . import _leftovers as leftovers
from ._outcome import (
    PICKLING_ERRORS,
    UNPICKLING_ERRORS,
    Batch,
    FarmStats,
    FarmTimeout,
    LostWorker,
    Outcome,
    Tag,
    TaskError,
    describe_error,
    sendable_batch,
    short_repr,
    unpickling_summary,
)
from ._shared import unshare
from ._stop import Stop
from ._trace import Tracer
from ._worker import REPORT_INTERVAL, Runner, Setup, prepare

log = logging.getLogger("ringmpi.farm")

#: Chunks a worker holds at once: it starts the next while the root takes in the last.
DEPTH = 2
#: A chunk's message is cut to about this many bytes once the root has seen
#: how large tasks are, so that the sends in flight cost the root little memory.
CHUNK_BYTES = 4 << 20
#: Seconds between checks of the deadlines and the journal, at the most.
CHECK_EVERY = 0.1
#: Seconds of work (as measured so far) below which a worker gets its second chunk.
PREFETCH = 0.05
#: How fast the loop's sleeps grow while nothing arrives.
GROWTH = 1.25
#: Seconds past ``task_timeout`` before a silent worker's task counts as late
#: (its reports come every ``REPORT_INTERVAL`` and the root polls in between).
DEADLINE_SLACK = 0.5 + REPORT_INTERVAL


class FarmSendError(RingmpiError):
    """A chunk of tasks could not be sent: it does not pickle, or MPI refused it."""

    def __init__(self, message: str, pickling: bool = False):
        super().__init__(message)
        #: the tasks (or one of them) cannot be pickled
        self.pickling = pickling


class Hooks:
    """What the engine tells the owner of a task besides its outcome; the farm needs none.

    The executor's futures: a task that started is running, a cancelled one is dropped.
    """

    def started(self, index: int) -> None:
        """Task ``index`` began on a worker."""

    def dropped(self, index: int) -> bool:
        """Whether task ``index`` was cancelled and must not run."""
        return False


class ListSource:
    """All tasks known up front, cut into chunks before the run (the farm's list)."""

    merge = False

    def __init__(self, tasks: Sequence[Any], chunks: list[list[int]]):
        self.tasks = tasks
        self.chunks = chunks
        self.exhausted = False

    def fill(self, engine: Engine) -> None:
        if not self.exhausted:
            engine.ready.extend(self.chunks)
            self.exhausted = True

    def forget(self, index: int) -> None:
        """Task ``index`` has its final outcome (the list keeps it)."""


class IterSource:
    """Tasks from an iterator, pulled as workers need them, at most ``ahead`` unfinished."""

    merge = True

    def __init__(self, iterable: Iterable[Any], ahead: int):
        self.iterator = iter(iterable)
        self.ahead = max(1, ahead)
        self.tasks: dict[int, Any] = {}
        self.count = 0
        self.exhausted = False
        #: what the iterator raised, raised again once the workers are released
        self.error: BaseException | None = None

    def fill(self, engine: Engine) -> None:
        while not self.exhausted and len(self.tasks) < self.ahead and not engine.failed:
            try:
                task = next(self.iterator)
            except StopIteration:
                self.exhausted = True
                return
            except BaseException as exc:  # the caller's generator failed
                self.exhausted = True
                self.error = exc
                engine.fail()
                return
            self.tasks[self.count] = task
            engine.ready.append([self.count])
            self.count += 1

    def forget(self, index: int) -> None:
        """Task ``index`` has its final outcome: it no longer counts as ahead."""
        self.tasks.pop(index, None)


class Engine:
    """The root of a dynamic farm run; :meth:`outcomes` is its loop.

    Args:
        comm: The farm's private communicator.
        root: This rank.
        host: This rank's host.
        setup: ``(fn, initializer, initargs)`` for the workers.
        stats: Filled in as outcomes arrive.
        source: Where tasks come from: ``tasks`` (index -> task), ``fill``
            (called every turn of the loop), ``exhausted`` and ``merge``
            (whether waiting tasks are joined into chunks as they go out).
        computing: How many ranks compute (guides the chunk sizes).
        ft: Whether lost workers are survived (ULFM on).
        stop_on_error: Stop handing out work at the first failed task.
        task_timeout: Seconds a task may run before ``FarmTimeout``.
        tracer: Records one span per task.
        retries: Run a task that raised again, up to this many times.
        stop: On a stop signal, hand out nothing more, take back what has not
            started and wait up to the grace period (then ``abandoned``).
        watch: Called while nothing arrives; raises to end the run.
        hooks: Told when tasks start, asked whether they were cancelled.
        backoff: How the loop waits while nothing arrives.
        wake: Cuts that wait short (the root's runner calls it with outcomes).
    """

    def __init__(
        self,
        comm,
        root: int,
        host: str,
        setup: Setup,
        stats: FarmStats,
        source: Any,
        *,
        computing: int,
        ft: bool,
        stop_on_error: bool,
        task_timeout: float | None,
        tracer: Tracer | None = None,
        retries: int = 0,
        stop: Stop | None = None,
        watch: Callable[[], None] | None = None,
        hooks: Hooks | None = None,
        backoff: poll.Backoff | None = None,
        wake: Callable[[], None] | None = None,
    ):
        self.comm, self.root, self.host = comm, root, host
        self.setup = setup
        self.stats = stats
        self.source = source
        self.tasks = source.tasks
        self.computing = max(1, computing)
        self.ft = ft
        self.stop_on_error = stop_on_error
        self.task_timeout = task_timeout
        self.tracer = tracer
        self.retries = retries
        self.stop = stop
        self.watch = watch
        self.hooks = hooks or Hooks()
        #: whether anyone asks after single tasks (the executor's futures)
        self.tracked = hooks is not None
        # Growing gently, the wait ends soon after a result that takes a while.
        self.backoff = backoff or poll.Backoff(growth=GROWTH)
        self.wake = wake or (lambda: None)
        #: chunks and single tasks waiting to go out, in order
        self.ready: deque[list[int]] = deque()
        #: rank -> the chunks it holds, oldest first, each the tasks not yet reported
        self.held: dict[int, deque[deque[int]]] = {}
        #: rank -> when the root last heard from it (or sent it work while it held none)
        self.heard: dict[int, float] = {}
        #: rank -> tasks asked back and not yet answered for
        self.taking: dict[int, set[int]] = {}
        #: rank -> ``Tag.TAKE`` messages sent and not yet answered
        self.unanswered: dict[int, int] = {}
        #: ranks asked for everything unstarted (a stop, a failure, a steal)
        self.emptied: set[int] = set()
        #: task index -> the rank holding it
        self.where: dict[int, int] = {}
        #: task index -> failed attempts that were retried
        self.attempts: dict[int, int] = {}
        #: fault tolerant: ranks with no free core, waiting to replace a lost one
        self.spares: list[int] = []
        self.requests: list[Any] = []
        #: bytes a task takes in a chunk's message, as last seen
        self.task_bytes = 0.0
        #: seconds a task takes on a worker, a moving average (None: none seen)
        self.task_seconds: float | None = None
        #: when the deadlines were last checked
        self.checked = 0.0
        self.failed = False
        #: stopped on a signal with tasks still running past the grace
        self.abandoned = False
        self.local: queue.SimpleQueue = queue.SimpleQueue()
        self.helper: Runner | None = None
        self.helper_thread: threading.Thread | None = None
        #: what the tasks run on the root leave running (when it computes)
        self.daemons: leftovers.DaemonWatch | None = None
        self.helper_error: BaseException | None = None
        self.lock = threading.RLock()
        #: rank -> chunks sent to it, and the last few as ``(number, indices)``
        #: (a worker that cannot unpickle one names it by number)
        self.sent: dict[int, int] = {}
        self.recent: dict[int, deque[tuple[int, list[int]]]] = {}
        #: tasks that travel alone: their chunk could not be unpickled
        self.solo: set[int] = set()
        #: rank -> why its last report could not be unpickled here (its tasks
        #: are known, and fail, once its next report or a ping's answer comes)
        self.unread: dict[int, tuple[str, str]] = {}
        #: the outcomes of such tasks, for the caller with the next arrivals
        self.unpickled: list[Batch] = []

    # -- the loop -----------------------------------------------------------------

    def start(self, active: Sequence[int], idle: Sequence[int], root_computes: bool) -> None:
        """Send the set-up to every rank (None to the idle ones without fault
        tolerance, which keeps them as spares) and start the root's runner."""
        self.spares = list(idle) if self.ft else []
        for rank in idle:
            self._send(self.setup if self.ft else None, rank, Tag.SETUP)
        for rank in active:
            self._send(self.setup, rank, Tag.SETUP)
            self.held[rank] = deque()
            self.heard[rank] = time.perf_counter()
        if root_computes:
            self._start_helper()

    def outcomes(self) -> Iterator[list[Outcome]]:
        """Hand out work and yield each batch of outcomes as it arrives, until
        every task is done (or the run failed and what ran is in)."""
        from mpi4py import MPI

        try:
            while True:
                self.release_sends()
                self.source.fill(self)
                if self.stop is not None:
                    self._heed_stop()
                    if self.abandoned:
                        return
                if self.failed:
                    self._take_back_all()
                else:
                    self._hand_out()
                arrived = self._take_in()
                if not arrived and not self._pending():
                    return
                yield from arrived
                del arrived  # not held while the next comes: a result is the caller's alone
        except MPI.Exception as exc:
            if not self.ft and _ft.is_loss(exc):
                self._lost_without_ft(exc)
            raise

    def _lost_without_ft(self, exc) -> None:
        """A rank was lost under ULFM (``mpiexec --with-ft ulfm``) but the
        farm is not fault tolerant: end the job with one line, as Open MPI
        does without ULFM (the others would wait for the lost one for ever)."""
        try:
            ranks = _ft.acknowledge_failed(self.comm)
        except Exception:  # an MPI without the ULFM calls
            ranks = []
        who = ", ".join(f"{rank}@{self._host(rank)}" for rank in ranks)
        who = f"{'rank' if len(ranks) == 1 else 'ranks'} {who}" if ranks else "a rank"
        _stop.abort_job(
            f"the farm lost {who} (it died): MPI reports {exc.Get_error_string()}; this farm "
            "is not fault tolerant, so the job ends (pass --fault-tolerant, or "
            "fault_tolerant=True to the farm, to survive lost workers)"
        )

    def _pending(self) -> bool:
        return bool(
            any(self.held.values())
            or any(self.taking.values())
            or any(self.unanswered.values())
            or (self.helper is not None and self.helper.held())
            or not self.local.empty()
            or (not self.failed and (self.ready or not self.source.exhausted))
        )

    def fail(self) -> None:
        """Hand out nothing more; take back what has not started."""
        self.failed = True

    # -- handing out -------------------------------------------------------------

    def _hand_out(self) -> None:
        """Give every worker with room its next chunk; feed idle ones from busy ones."""
        # A rank asked back that now holds nothing can take work again.
        self.emptied = {r for r in self.emptied if self.held.get(r) or self.taking.get(r)}
        for rank, chunks in self.held.items():
            while rank not in self.emptied and self._room(len(chunks), _count(chunks)):
                indices = self._take()
                if indices is None:
                    break
                self._send_chunk(rank, indices)
        if self.helper is not None:
            while self._room(min(self.helper.held(), 1), self.helper.held()):
                indices = self._take()
                if indices is None:
                    break
                if self.tracer is not None:
                    self.tracer.handed_out(self.root, indices)
                self.helper.add([(i, self.tasks[i]) for i in indices])
        if not self.ready:
            self._steal()
        elif not self._workers_left():  # every worker was lost: the root computes
            self._start_helper()

    def _room(self, chunks: int, tasks: int) -> bool:
        """Whether a worker holding ``chunks`` (``tasks``) gets another one now.

        A second chunk only while the first is short (tasks known to take less
        than ``PREFETCH`` seconds in all): it hides the round trip for small
        tasks, and would unbalance large ones (fib(38) and fib(37) on one
        worker).
        """
        if chunks == 0:
            return True
        if chunks >= DEPTH or self.task_seconds is None:
            return False
        return tasks * self.task_seconds < PREFETCH

    def _take(self) -> list[int] | None:
        """Return the next chunk to hand out, or None when none waits."""
        with self.lock:
            while self.ready:
                if self.source.merge:
                    # Guided, as multiprocessing cuts a map: a share of what
                    # waits, and once tasks are timed no more than PREFETCH
                    # seconds of them, so the last chunks end together.
                    share = max(1, len(self.ready) // (4 * self.computing))
                    if self.task_seconds:
                        share = min(share, max(1, int(PREFETCH / self.task_seconds)))
                    chunk: list[int] = []
                    while self.ready and len(chunk) < share:
                        if self.solo and self.ready[0][0] in self.solo:
                            if not chunk:
                                chunk = self.ready.popleft()
                            break
                        chunk.extend(self.ready.popleft())
                else:
                    chunk = self.ready.popleft()
                if self.task_bytes and len(chunk) > 1:
                    most = max(1, int(CHUNK_BYTES / self.task_bytes))
                    if len(chunk) > most:  # the rest goes first next time
                        self.ready.appendleft(chunk[most:])
                        chunk = chunk[:most]
                        if not self.source.merge:
                            self.stats.chunks += 1
                chunk = [i for i in chunk if not self.hooks.dropped(i)]
                if chunk:
                    if self.source.merge:  # a list's chunks are counted as cut
                        self.stats.chunks += 1
                    return chunk
            return None

    def _send_chunk(self, rank: int, indices: list[int]) -> None:
        chunks = self.held[rank]
        if not chunks:
            self.heard[rank] = time.perf_counter()
        chunks.append(deque(indices))
        if self.tracked:
            for index in indices:
                self.where[index] = rank
        if self.tracer is not None:
            self.tracer.handed_out(rank, indices)
        sizes: list[int] = []
        try:
            self._send([(i, self.tasks[i]) for i in indices], rank, Tag.TASK, indices, sizes)
        except FarmSendError as exc:
            if not exc.pickling:
                raise
            # Each task that cannot travel fails alone (nothing was sent),
            # the others go out again.
            chunks.pop()
            for index in indices:
                self.where.pop(index, None)
            self._fail_unpicklable(rank, indices)
            return
        number = self.sent.get(rank, 0)
        self.sent[rank] = number + 1
        self.recent.setdefault(rank, deque(maxlen=4 * DEPTH + 8)).append((number, indices))
        self.task_bytes = sizes[0] / len(indices)

    def _fail_unpicklable(self, rank: int, indices: list[int]) -> None:
        failed, kept = Batch(), []
        for index in indices:
            task = self.tasks[index]
            try:
                pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
            except PICKLING_ERRORS as exc:
                error = describe_error(exc, index, task, self.root, self.host)
                error.summary = f"the task cannot be pickled to send to a worker: {error.summary}"
                failed.append((index, None, error))
            else:
                kept.append(index)
        if failed:
            self.local.put((failed, 0.0))
        if kept:
            self._send_chunk(rank, kept)

    def _send(
        self,
        obj: Any,
        rank: int,
        tag: int,
        indices: list[int] | None = None,
        sizes: list[int] | None = None,
    ) -> None:
        from mpi4py import MPI

        try:
            self.requests.append(_wire.isend(self.comm, obj, rank, tag, sizes))
        except MPI.Exception as exc:
            if self.ft and _ft.is_loss(exc):
                raise
            what = "a message" if indices is None else f"task(s) {self._shown(indices)}"
            raise FarmSendError(
                f"{what} could not be sent to rank {rank}: {exc.Get_error_string()}"
            ) from None
        except PICKLING_ERRORS as exc:  # anything pickling raises; nothing was sent
            if indices is None:
                raise
            raise FarmSendError(
                f"task(s) {self._shown(indices)} cannot be pickled to send to a worker: "
                f"{type(exc).__name__}: {exc}",
                pickling=True,
            ) from None

    def _shown(self, indices: list[int]) -> str:
        return ", ".join(f"{i} ({short_repr(self.tasks[i], 40)})" for i in indices[:3])

    def _steal(self) -> None:
        """An idle worker and nothing waiting: take back the unstarted tasks of
        the one that holds most (they wait behind a task it is running)."""
        helper = self.helper
        idle = [r for r, chunks in self.held.items() if not chunks and r not in self.emptied]
        helper_idle = helper is not None and not helper.held()
        if not idle and not helper_idle:
            return
        if idle and helper is not None and helper.queue:
            self._requeue(helper.take_back_all())
            return
        busiest, most = None, 1
        for rank, chunks in self.held.items():
            count = sum(len(chunk) for chunk in chunks)
            if count > most and rank not in self.emptied:
                busiest, most = rank, count
        if busiest is not None:
            self._ask_back(busiest)

    def _ask_back(self, rank: int) -> None:
        """Ask ``rank`` for every task it holds but the one it may be running,
        and give it nothing more until it reports an outcome."""
        self.emptied.add(rank)
        asked = self.taking.setdefault(rank, set())
        unstarted = [i for chunk in self.held[rank] for i in chunk][1:]
        unstarted = [i for i in unstarted if i not in asked]
        if unstarted:
            asked.update(unstarted)
            self._ask(unstarted, rank)

    def _ask(self, indices: list[int], rank: int) -> None:
        """Send ``rank`` a ``Tag.TAKE`` for ``indices`` (empty: a ping)."""
        self._send(indices, rank, Tag.TAKE)
        self.unanswered[rank] = self.unanswered.get(rank, 0) + 1

    def _take_back_all(self) -> None:
        for rank, chunks in self.held.items():
            if chunks and rank not in self.emptied:
                self._ask_back(rank)
        if self.helper is not None:
            self._requeue(self.helper.take_back_all())

    def take_back(self, indices: Iterable[int] | None = None) -> None:
        """Ask for the tasks ``indices`` (default: all) back where they have
        not started; the owner's hooks decide whether they run after all."""
        if indices is None:
            self._take_back_all()
            return
        by_rank: dict[int, list[int]] = {}
        for index in indices:
            rank = self.where.get(index)
            if rank is not None and rank in self.held:
                by_rank.setdefault(rank, []).append(index)
        for rank, asked in by_rank.items():
            self.taking.setdefault(rank, set()).update(asked)
            self._ask(asked, rank)
        if self.helper is not None:
            self._requeue(self.helper.take_back(set(indices)))

    def _requeue(self, indices: Iterable[int], front: bool = True) -> None:
        pieces = [[i] for i in indices if not self.hooks.dropped(i)]
        with self.lock:
            if front:
                self.ready.extendleft(reversed(pieces))
            else:
                self.ready.extend(pieces)

    # -- taking in ---------------------------------------------------------------

    def _take_in(self) -> list[list[Outcome]]:
        """Take in what has arrived from the workers and the root's runner;
        check the journal and the deadlines when nothing came."""
        from mpi4py import MPI

        arrived: list[list[Outcome]] = []
        status = MPI.Status()
        try:
            message = poll.improbe(self.comm, MPI.ANY_SOURCE, Tag.RESULT, status, self.backoff)
            # Every report already here first, each worker topped up, and
            # only then the journal and the caller's loop.
            while message is not None:
                rank = status.Get_source()
                try:
                    got = _wire.receive_salvaging(self.comm, message, status)
                    if type(got) is _wire.Salvaged:
                        got = self._salvaged(rank, got)
                    batch, busy = got
                except UNPICKLING_ERRORS as exc:  # read, but not understood
                    self._unreadable_report(rank, exc)
                    message = self.comm.improbe(MPI.ANY_SOURCE, Tag.RESULT, status)
                    continue
                outcomes = self._on_report(rank, batch, busy)
                if outcomes:
                    arrived.append(outcomes)
                message = self.comm.improbe(MPI.ANY_SOURCE, Tag.RESULT, status)
        except MPI.Exception as exc:
            if not (self.ft and _ft.is_loss(exc)):
                raise
            self._recover()
        if self.helper is not None:
            self.helper.flush_if_due()
        while not self.local.empty():
            batch, busy = self.local.get()
            outcomes = self._on_report(self.root, batch, busy)
            if outcomes:
                arrived.append(outcomes)
        if self.helper_error is not None:
            raise RuntimeError("the root's compute thread failed") from self.helper_error
        if self.unpickled:
            arrived.extend(self.unpickled)
            self.unpickled = []
        if arrived:
            self.backoff.reset()
        now = time.perf_counter()
        if not arrived or now - self.checked > CHECK_EVERY:
            # Also under a steady stream of reports: a silent worker is late.
            self.checked = now
            if self.watch is not None:
                self.watch()
            self._check_deadlines()
        return arrived

    def _on_report(self, rank: int, batch: Batch, busy: float) -> list[Outcome]:
        """Note what ``rank`` reports: outcomes, the task it runs, what it gave back."""
        self.heard[rank] = time.perf_counter()
        chunks = self.held.get(rank)
        failed = self._unpickled(rank, batch, chunks)
        if failed:
            self._on_failed(rank, failed)
            self.unpickled.append(failed)
        if batch.answer:
            self.unanswered[rank] -= 1
        if batch.returned:
            self.taking.get(rank, set()).difference_update(batch.returned)
            if chunks is not None:
                _forget(chunks, set(batch.returned))
            for index in batch.returned:
                self.where.pop(index, None)
            self._requeue(batch.returned)
        if batch:
            worker = self.stats.worker(rank)
            worker.tasks += len(batch)
            worker.busy += busy
            each = busy / len(batch)
            last = self.task_seconds
            self.task_seconds = each if last is None else 0.7 * last + 0.3 * each
            if self.tracer is not None:
                self.tracer.came_back(rank, batch)
            taking = self.taking.get(rank)
            for index, _, _ in batch:
                if chunks is not None:
                    _done(chunks, index)
                if taking:
                    taking.discard(index)
            if self.tracked:
                for index, _, _ in batch:
                    self.hooks.started(index)
                    self.where.pop(index, None)
            self.emptied.discard(rank)
        if batch.running is not None:
            self.hooks.started(batch.running)
        if not batch:
            return []
        if self.retries:
            batch = self._retry(batch)
        for index, _, _ in batch:
            if index not in batch.retried:
                self.source.forget(index)
        if self.stop_on_error and any(e for i, _, e in batch if i not in batch.retried):
            self.fail()
        return batch

    def _unpickled(self, rank: int, batch: Batch, chunks) -> Batch:
        """The tasks of ``rank`` that fail because the worker could not
        unpickle their chunk, or this rank a report of theirs."""
        failed = Batch()
        failed.rank, failed.host = rank, self._host(rank)
        lost: list[int] = []
        why = ("", "")
        if batch.unreadable is not None:
            number, summary, tb = batch.unreadable
            indices = next((i for n, i in self.recent.get(rank, ()) if n == number), [])
            held = {i for chunk in chunks or () for i in chunk}
            indices = [i for i in indices if i in held]
            if len(indices) == 1 or all(i in self.solo for i in indices):
                lost, why = indices, (summary, tb)
            elif indices:  # one of them cannot travel: each goes again alone
                self.solo.update(indices)
                _forget(chunks, set(indices))
                self.taking.get(rank, set()).difference_update(indices)
                for index in indices:
                    self.where.pop(index, None)
                self._requeue(indices)
        elif rank in self.unread and (batch or batch.running is not None or batch.pong):
            # Tasks end and are reported in order: the lost report held the
            # tasks before the first one reported since.
            order = [i for chunk in chunks or () for i in chunk]
            first = batch[0][0] if batch else batch.running
            lost = order[: order.index(first)] if first in order else order
            why = self.unread.pop(rank)
        for index in lost:
            task = self.tasks[index]
            summary = why[0]
            if len(lost) > 1 and batch.unreadable is None:
                # One report, one stream: which of its results raised is not known.
                others = ", ".join(str(i) for i in lost if i != index)
                summary = summary.replace("the result", "a result in it", 1)
                summary = f"its result came in one report with that of task(s) {others}; {summary}"
            error = TaskError(index, short_repr(task), rank, failed.host, summary, why[1])
            failed.append((index, None, error))
        if lost and chunks is not None:
            _forget(chunks, set(lost))
            self.taking.get(rank, set()).difference_update(lost)
        for index in lost:
            self.where.pop(index, None)
            self.solo.discard(index)
        return failed

    def _on_failed(self, rank: int, failed: Batch) -> None:
        """Count the tasks of ``failed`` as done, without a span."""
        self.stats.worker(rank).tasks += len(failed)
        for index, _, _ in failed:
            self.source.forget(index)
        if self.stop_on_error:
            self.fail()

    def _salvaged(self, rank: int, got: _wire.Salvaged) -> tuple[Batch, float]:
        """A report that unpickled in part: each task whose result holds what
        raised fails with that error, the others keep their results.

        Raises:
            BaseException: The error, when what raised cannot be told apart.
        """
        batch, busy = got.obj
        if type(batch) is not Batch:
            raise got.error
        left = dict(got.unreadable)
        outcomes: list[Outcome] = []
        for index, value, error in batch:
            found = _unreadable_in((value, error), left)
            if not found:
                outcomes.append((index, value, error))
                continue
            summary = unpickling_summary(found[0], "the result").replace("this rank", "the root")
            task = self.tasks[index]
            tb = format_exception(found[0])
            failure = TaskError(index, short_repr(task), rank, self._host(rank), summary, tb)
            outcomes.append((index, None, failure))
        if left:  # somewhere the search did not reach
            raise got.error
        return Batch.like(batch, outcomes), busy

    def _unreadable_report(self, rank: int, exc: BaseException) -> None:
        """A report of ``rank`` did not unpickle: its tasks are not known yet;
        ask the worker where it stands (an empty ``TAKE``)."""
        summary = unpickling_summary(exc, "the result").replace("this rank", "the root")
        log.info("rank %d: %s", rank, summary)
        self.unread[rank] = (summary, format_exception(exc))
        self._ask([], rank)

    def _host(self, rank: int) -> str:
        return self.stats.hosts[rank] if self.stats.hosts else "?"

    def _retry(self, batch: Batch) -> Batch:
        """Queue the failed tasks of ``batch`` that have retries left, at the
        back (another rank is likely to take them); mark them ``retried``, so
        that their error is recorded but not reported."""
        retried = set()
        for index, _, error in batch:
            if error is not None and self.attempts.get(index, 0) < self.retries:
                self.attempts[index] = self.attempts.get(index, 0) + 1
                retried.add(index)
        if retried:
            self._requeue(sorted(retried), front=False)
            batch.retried = frozenset(retried)
        return batch

    # -- time, stops and losses ---------------------------------------------------

    def _check_deadlines(self) -> None:
        """Raise ``FarmTimeout`` if a worker has run a task past the limit."""
        if self.task_timeout is None:
            return
        now = time.perf_counter()
        limit = self.task_timeout + DEADLINE_SLACK
        for rank, chunks in self.held.items():
            if chunks and now - self.heard[rank] > limit:
                raise FarmTimeout(self._late(rank, chunks[0][0], now - self.heard[rank]))
        if self.helper is not None:
            with self.helper.lock:
                current, began = self.helper.current, self.helper.began
            if current is not None and now - began > self.task_timeout:
                raise FarmTimeout(self._late(self.root, current[0], now - began))

    def _late(self, rank: int, index: int, ran: float) -> str:
        host = self.stats.hosts[rank] if self.stats.hosts else "?"
        return (
            f"rank {rank}@{host} has run task(s) {self._shown([index])} for {ran:.1f} s, "
            f"past the limit of {self.task_timeout:g} s per task"
        )

    def _heed_stop(self) -> None:
        """Stop as asked by a signal here or on a worker: take back, then wait
        for what runs up to the grace period."""
        from mpi4py import MPI

        stop = self.stop
        assert stop is not None
        if not stop.requested:
            try:
                message = self.comm.improbe(MPI.ANY_SOURCE, Tag.STOP)
                if message is not None:
                    stop.notice(message.recv())
            except MPI.Exception as exc:
                if not (self.ft and _ft.is_loss(exc)):
                    raise
        if stop.requested:
            self.fail()
            if stop.expired() and self._pending():
                self.abandoned = True

    def _workers_left(self) -> bool:
        return bool(self.held or (self.helper is not None and self.helper_thread is not None))

    def _recover(self) -> None:
        """Requeue what lost workers held and bring in spares (ULFM)."""
        known = {lost.rank for lost in self.stats.lost}
        newly = 0
        for rank in _ft.acknowledge_failed(self.comm):
            if rank in known:
                continue
            chunks = self.held.pop(rank, deque())
            indices = [i for chunk in chunks for i in chunk]
            for index in indices:
                self.where.pop(index, None)
            self.taking.pop(rank, None)
            self.unanswered.pop(rank, None)
            self.emptied.discard(rank)
            self._requeue(indices)
            if rank in self.spares:
                self.spares.remove(rank)
            else:
                newly += 1
            host = self.stats.hosts[rank] if self.stats.hosts else "?"
            self.stats.lost.append(LostWorker(rank, host, list(indices)))
            log.warning("lost worker rank %d@%s; requeued tasks %s", rank, host, indices)
        for _ in range(newly):  # a spare for each worker lost
            if self.spares:
                self._bring_in(self.spares.pop(0))
        if self.ready and not self._workers_left():
            # Every worker is lost: the root finishes the work itself.
            self._start_helper()

    def _bring_in(self, rank: int) -> None:
        self.stats.worker(rank)
        self.held[rank] = deque()
        self.heard[rank] = time.perf_counter()

    def _start_helper(self) -> None:
        """Compute on the root too, in a thread, fed like a worker."""
        if self.helper_thread is not None:
            return

        def report(batch: Batch, busy: float, tasks: list[tuple[int, Any]]) -> None:
            # As a worker's would: what could not travel fails its task, and
            # no result points into shared data (freed with the farm).
            if batch:
                batch = sendable_batch(batch, tasks, self.root, self.host)
                if _shared.attached():
                    batch = Batch.like(batch, [(i, unshare(v), e) for i, v, e in batch])
            self.local.put((batch, busy))
            self.wake()

        if self.ready and not self.held:
            log.info("every worker is lost: the root computes the rest")

        self.daemons = leftovers.DaemonWatch()
        fn = self.daemons.wrap(prepare(self.setup))
        self.helper = Runner(fn, self.root, self.host, report)
        self.stats.worker(self.root)
        self.helper_thread = threading.Thread(
            target=self._compute_here, name="ringmpi-root-compute", daemon=True
        )
        self.helper_thread.start()

    def _compute_here(self) -> None:
        assert self.helper is not None
        try:
            self.helper.run()
        except BaseException as exc:  # never lose a task silently
            self.helper_error = exc
        finally:
            if self.daemons is not None:
                self.daemons.note_children()

    # -- the end ---------------------------------------------------------------------

    def drain(self) -> None:
        """Stop the root's runner, release every worker and complete every send."""
        from mpi4py import MPI

        if self.helper is not None:
            self.helper.close()
        if self.helper_thread is not None:
            self.helper_thread.join()
        if self.daemons is not None:
            for line in self.daemons.warnings(f"{self.root}@{self.host}"):
                log.warning("%s", line)
        for rank in [*self.held, *self.spares]:
            self._send(None, rank, Tag.TASK)
        for request in self.requests:
            try:
                poll.wait(request, self.backoff)
            except MPI.Exception:
                if not self.ft:
                    raise  # a send to a lost worker cannot complete
        self.requests = []

    def release_sends(self) -> None:
        """Let go of the sends that have completed (the root keeps no more)."""
        from mpi4py import MPI

        live = []
        for request in self.requests:
            try:
                if not request.Test():
                    live.append(request)
            except MPI.Exception:
                if not self.ft:
                    raise
        self.requests = live


def _count(chunks: deque[deque[int]]) -> int:
    return sum(len(chunk) for chunk in chunks)


def _done(chunks: deque[deque[int]], index: int) -> None:
    """Forget ``index`` (reported) from the chunks a worker holds; tasks end in order."""
    front = chunks[0] if chunks else None
    if front and front[0] == index:
        front.popleft()
    else:
        _forget(chunks, {index})
        return
    while chunks and not chunks[0]:
        chunks.popleft()


def _unreadable_in(obj: Any, left: dict[int, tuple[Any, BaseException]], depth: int = 5):
    """The errors of the placeholders of ``left`` found in ``obj`` (in its
    containers and attributes, ``depth`` levels down), taken from ``left``."""
    found: list[BaseException] = []
    stack = [(obj, 0)]
    while stack and left:
        item, level = stack.pop()
        if isinstance(item, _wire.Unreadable):
            hit = left.pop(id(item), None)
            if hit is not None:
                found.append(hit[1])
            continue
        if level >= depth:
            continue
        kind = type(item)
        if kind in (list, tuple, set, frozenset) or isinstance(item, list):
            stack.extend((x, level + 1) for x in item)
        elif kind is dict:
            stack.extend((x, level + 1) for pair in item.items() for x in pair)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            stack.extend((x, level + 1) for x in vars(item).values())
    return found


def _forget(chunks: deque[deque[int]], indices: set[int]) -> None:
    for i, chunk in enumerate(chunks):
        if any(index in indices for index in chunk):
            chunks[i] = deque(index for index in chunk if index not in indices)
    kept = [chunk for chunk in chunks if chunk]
    chunks.clear()
    chunks.extend(kept)
