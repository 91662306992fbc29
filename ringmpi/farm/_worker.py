"""The worker's side of the farm: receive the function, run chunks, send outcomes.

Everything a worker knows lives in the locals of its serve loop; the function
and the initializer arrive in the SETUP message.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any

from ..base import poll
from ..base.errors import format_exception
from . import _wire
from ._ft import is_loss
from ._outcome import (
    PICKLING_ERRORS,
    UNPICKLING_ERRORS,
    Batch,
    InitializerError,
    Outcome,
    Tag,
    TaskError,
    call,
    describe_error,
    sendable_batch,
    short_repr,
    unpickling_summary,
)

Setup = tuple[Callable[[Any], Any], "Callable[..., Any] | None", tuple[Any, ...]]


def _unusable(summary: str) -> Callable[[Any], Any]:
    def failed(_task: Any) -> Any:
        raise RuntimeError(summary)

    return failed


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
    except (Exception, SystemExit) as exc:
        message = f"the initializer failed: {type(exc).__name__}: {exc}\n{format_exception(exc)}"

        def failed(_task: Any) -> Any:
            raise InitializerError(message)

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


#: Seconds a worker's outcomes wait before they are reported: a report goes
#: when this much has passed since the last (also while a long task runs, so
#: the root learns that it started), when the worker runs out of work, or when
#: ``REPORT_COUNT`` outcomes wait.
REPORT_INTERVAL = 0.005
REPORT_COUNT = 1024
#: Seconds a task runs before a report says it started (what futures' running()
#: and the root's deadlines go by); shorter tasks are known by their outcome.
RUNNING_NOTE = 0.05


class Runner:
    """Runs tasks one after another from its queue and reports their outcomes.

    The queue is filled by :meth:`add` and emptied from the back by
    :meth:`take_back` (tasks not yet started); both may be called from another
    thread. Outcomes are reported through ``report(batch, busy)`` in batches:
    a :class:`Batch` of the tasks that ran back to back since the last report,
    with ``running`` set to the task that runs now, if any. The runner reports
    before a task that starts late enough, and when it runs out of work;
    whoever feeds it calls :meth:`flush_if_due` now and then, so that a long
    task's start and the outcomes before it are reported while it runs.

    Args:
        fn: The function to apply.
        rank, host: Where it runs, for the outcomes.
        report: Called with ``(batch, busy_seconds, tasks)``, under the runner's lock.
    """

    def __init__(self, fn: Callable[[Any], Any], rank: int, host: str, report):
        self.fn, self.rank, self.host = fn, rank, host
        self.report = report
        #: called when it runs out of work, after its report
        self.on_idle: Callable[[], None] | None = None
        self.lock = threading.Condition()
        self.queue: deque[tuple[int, Any]] = deque()
        self.closed = False
        #: outcomes not yet reported, and their tasks; seconds they took
        self._outcomes = Batch()
        self._tasks: list[tuple[int, Any]] = []
        self._busy = 0.0
        self._since = time.perf_counter()
        #: the task running now: (index, task, wall-clock start), and whether
        #: a report said so
        self.current: tuple[int, Any, float] | None = None
        self._told = False
        #: perf_counter() when the current task began (for the root's deadlines)
        self.began = 0.0

    # -- from the feeding thread ------------------------------------------------

    def add(self, chunk: Sequence[tuple[int, Any]]) -> None:
        with self.lock:
            self.queue.extend(chunk)
            self.lock.notify()

    def take_back(self, indices: Collection[int]) -> list[int]:
        """Remove the tasks of ``indices`` that have not started; return them."""
        wanted = set(indices)
        with self.lock:
            back = [index for index, _ in self.queue if index in wanted]
            if back:
                self.queue = deque(item for item in self.queue if item[0] not in wanted)
            return back

    def take_back_all(self) -> list[int]:
        """Remove every task that has not started; return them in order."""
        with self.lock:
            back = [index for index, _ in self.queue]
            self.queue.clear()
            return back

    def close(self) -> None:
        """No more tasks will come: :meth:`run` returns once the queue is empty."""
        with self.lock:
            self.closed = True
            self.lock.notify()

    def flush_if_due(self) -> None:
        """Report what waits if ``REPORT_INTERVAL`` has passed since the last report."""
        with self.lock:
            now = time.perf_counter()
            if now - self._since < REPORT_INTERVAL:
                return
            if self._outcomes or (
                self.current is not None and not self._told and now - self.began >= RUNNING_NOTE
            ):
                self._flush()

    def held(self) -> int:
        """Tasks queued or running here."""
        with self.lock:
            return len(self.queue) + (self.current is not None)

    # -- on the running thread ----------------------------------------------------

    def run(
        self,
        idle: Callable[[], object] | None = None,
        between: Callable[[], object] | None = None,
    ) -> None:
        """Run tasks until closed and empty.

        Args:
            idle: Called while no task waits (default: wait to be woken by
                :meth:`add` or :meth:`close`).
            between: Called before each task (to read messages when no other
                thread does).
        """
        fn, rank, host, lock = self.fn, self.rank, self.host, self.lock
        clock = time.perf_counter
        # Wall-clock times (for the journal and the trace) from one reading:
        # perf_counter() plus this offset, a clock read once a task.
        offset = time.time() - clock()
        outcomes: Batch | None = None
        ends: list[float] = []
        tasks: list[tuple[int, Any]] = []
        now = 0.0
        done: tuple[Outcome, tuple[int, Any], float] | None = None
        while True:
            if between is not None:
                between()
            with lock:
                if done is not None:  # the last task's outcome, then the next task
                    outcome, item, end = done
                    if self._outcomes is not outcomes:  # a report went meanwhile
                        outcomes, tasks = self._outcomes, self._tasks
                        ends = outcomes.ends if outcomes.ends is not None else []
                        outcomes.ends = ends
                    outcomes.append(outcome)
                    ends.append(end + offset)
                    tasks.append(item)
                    self._busy += end - now
                    self.current = done = None
                    del outcome, item  # in the batch now, held no longer here
                    if len(outcomes) >= REPORT_COUNT:
                        self._flush()
                while not self.queue:
                    # What was reported is held no longer here.
                    outcomes, tasks, ends = None, [], []
                    if self._outcomes:
                        self._flush()  # out of work: report at once
                        if self.on_idle is not None:
                            self.on_idle()  # more work may follow the report soon
                    if self.closed:
                        return
                    if idle is None:
                        lock.wait()
                    else:
                        lock.release()
                        try:
                            idle()
                        finally:
                            lock.acquire()
                item = self.queue.popleft()
                now = clock()
                if self._outcomes and now - self._since >= REPORT_INTERVAL:
                    self._flush()
                if not self._outcomes:
                    self._outcomes.start = now + offset
                    self._outcomes.ends = []
                self.current, self._told, self.began = (item[0], item[1], now + offset), False, now
            done = _run_one(fn, item, clock, rank, host)

    def _flush(self) -> None:
        outcomes, tasks, busy = self._outcomes, self._tasks, self._busy
        outcomes.rank, outcomes.host = self.rank, self.host
        if self.current is not None:
            outcomes.running = self.current[0]
            self._told = True
            if not outcomes:
                outcomes.start = self.current[2]
        self._outcomes, self._tasks, self._busy = Batch(), [], 0.0
        self._since = time.perf_counter()
        if self.current is not None:  # the next report begins with it
            self._outcomes.start, self._outcomes.ends = self.current[2], []
        self.report(outcomes, busy, tasks)


def _run_one(
    fn: Callable[[Any], Any],
    item: tuple[int, Any],
    clock: Callable[[], float],
    rank: int,
    host: str,
) -> tuple[Outcome, tuple[int, Any], float]:
    """Run one task; return its outcome, the task and when it ended (the
    task's value and error live in this frame only, not in the runner's)."""
    index, task = item
    value, exc = call(fn, task)
    end = clock()
    error = None if exc is None else describe_error(exc, index, task, rank, host)
    return (index, value, error), item, end


def serve_dynamic(comm, root: int) -> None:
    """Serve tasks until the root says stop (``None``).

    Tasks run on this (the main) thread, one after another, from a
    :class:`Runner`'s queue. With ``MPI_THREAD_MULTIPLE`` a mailbox thread
    receives the root's messages (more tasks, ``TAKE`` to give back tasks not
    yet started) and paces the reports while a task runs; without it the
    main thread reads them between tasks.
    """
    from mpi4py import MPI

    rank, host = comm.Get_rank(), socket.gethostname()
    backoff = poll.Backoff()
    try:
        setup = _wire.received(comm, poll.recv(comm, root, Tag.SETUP, backoff=backoff), root)
    except UNPICKLING_ERRORS as exc:  # the function is missing here: each task says so
        setup = (_unusable(unpickling_summary(exc, "the farm's function")), None, ())
    if setup is None:
        return  # not needed: more ranks than cores or than tasks
    threaded = MPI.Query_thread() >= MPI.THREAD_MULTIPLE
    sending = threading.Lock()  # the parts of one message never interleave

    def report(outcomes: Batch, busy: float, tasks: list[tuple[int, Any]]) -> None:
        with sending:
            send_outcomes(comm, root, outcomes, busy, tasks)

    runner = Runner(prepare(setup), rank, host, report)
    mailbox = Mailbox(comm, root, runner, report)
    if not threaded:
        runner.run(idle=mailbox.poll, between=mailbox.peek)
        return
    thread = threading.Thread(target=mailbox.serve, name="ringmpi-worker-mailbox", daemon=True)
    thread.start()
    try:
        runner.run()
    finally:
        runner.close()
        thread.join()
    if mailbox.error is not None:
        raise mailbox.error


class Mailbox:
    """A worker's messages from the root: ``TASK`` chunks (``None``: stop) and ``TAKE``."""

    def __init__(self, comm, root: int, runner: Runner, report):
        self.comm, self.root, self.runner, self.report = comm, root, runner, report
        self.woken = threading.Event()
        self.backoff = poll.Backoff(sleep=self._nap)
        self.error: BaseException | None = None
        #: TASK chunks received so far (the root numbers them alike)
        self.chunks = 0
        runner.on_idle = self.woken.set

    def _nap(self, seconds: float) -> None:
        # The runner cuts a long nap short when it runs out of work: the
        # root's answer to its report comes soon, and it waits for it.
        if self.woken.wait(seconds):
            self.woken.clear()
            self.backoff.reset()

    def serve(self) -> None:
        """The mailbox thread: read messages and pace reports until told to stop."""
        idle_cap = self.backoff.cap
        try:
            while not self.poll():
                self.runner.flush_if_due()
                # While a task runs nothing is urgent: more work waits its turn,
                # a TAKE and a long task's running note may come a few ms later
                # (and waking often would take the GIL from the task).
                busy = self.runner.current is not None
                self.backoff.cap = max(idle_cap, RUNNING_NOTE / 2) if busy else idle_cap
        except BaseException as exc:  # the main thread raises it
            self.error = exc
            self.runner.close()

    def poll(self) -> bool:
        """Take in what the root sent, waiting a little if nothing came; True once stopped."""
        return self._take_in(wait=True)

    def peek(self) -> bool:
        """Take in what the root sent, without waiting; True once stopped."""
        return self._take_in(wait=False)

    def _take_in(self, wait: bool) -> bool:
        from mpi4py import MPI

        comm, root, runner = self.comm, self.root, self.runner
        status = MPI.Status()
        if wait:
            message = poll.improbe(comm, root, MPI.ANY_TAG, status, self.backoff)
        else:
            message = comm.improbe(root, MPI.ANY_TAG, status)
        while message is not None:
            self.backoff.reset()
            tag = status.Get_tag()
            try:
                obj = _wire.received(comm, message.recv(), root)
            except UNPICKLING_ERRORS as exc:  # the message was read; its tasks fail
                if tag != Tag.TASK:
                    raise
                reply = Batch()
                summary = unpickling_summary(exc, "the task")
                reply.unreadable = (self.chunks, summary, format_exception(exc))
                self.chunks += 1
                with runner.lock:
                    self.report(reply, 0.0, [])
                message = comm.improbe(root, MPI.ANY_TAG, status)
                continue
            if tag == Tag.TAKE:
                back = runner.take_back(obj)
                reply = Batch()
                reply.returned = back
                reply.answer = True
                with runner.lock:
                    if not obj:  # a ping: every outcome so far goes first
                        if runner._outcomes:
                            runner._flush()
                        reply.pong = True
                        if runner.current is not None:
                            reply.running = runner.current[0]
                    self.report(reply, 0.0, [])
            elif obj is None:
                runner.close()
                return True
            else:
                self.chunks += 1
                runner.add(obj)
            message = comm.improbe(root, MPI.ANY_TAG, status)
        return False


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
    except MPI.Exception as exc:
        if is_loss(exc):
            raise
        why = f"the result could not be sent to the root: {exc.Get_error_string()}"
        failed: list[Outcome] = [
            (i, None, TaskError(i, short_repr(task), rank, host, why, ""))
            for (i, _, _), (_, task) in zip(outcomes, chunk)
        ]
        outcomes = Batch.like(outcomes, failed)
    except PICKLING_ERRORS:  # anything pickling raises: nothing was sent
        outcomes = sendable_batch(outcomes, chunk, rank, host)
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
