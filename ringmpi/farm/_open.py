"""An open-ended dispatcher: tasks keep arriving while the farm runs.

The executor and the pool (:mod:`ringmpi.executor`) feed
it one future at a time. It is the farm's :class:`~._root.Dispatcher` with
four changes: a worker with nothing to do is parked until work comes (never
released before the end); chunks are cut when a worker needs one, from
whatever is waiting (guided: a share of the waiting tasks, so a burst of tiny
tasks travels in a few messages and a lone task goes at once); each worker
holds up to ``DEPTH`` chunks, so that it starts the next one while the root
is still taking in the last result (the worker's loop is unchanged: the next
chunk simply waits in its queue of messages); and a future that was cancelled
before its chunk was cut is never sent. ``in_flight`` holds, per rank, all
the task indices it holds and when the oldest chunk was sent.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

from ..base import poll
from . import _wire
from ._outcome import FarmStats, Outcome, Tag, TaskError, describe_error, sendable_batch
from ._root import Dispatcher
from ._worker import Setup, prepare, run_chunk

#: A task as the workers run it: ``(fn, args, kwargs)``.
Call = tuple[Any, tuple[Any, ...], dict[str, Any]]

#: Chunks a worker holds at once.
DEPTH = 2


def apply(task: Call) -> Any:
    """Run one ``(fn, args, kwargs)`` task: the function every worker serves."""
    fn, args, kwargs = task
    return fn(*args, **kwargs)


class OpenDispatcher(Dispatcher):
    """A dispatcher fed by :meth:`add` while it runs; one thread drives it.

    Args:
        comm: The private communicator.
        root: This rank.
        host: This rank's host.
        setup: ``(apply, initializer, initargs)`` for the workers.
        stats: Filled in as outcomes arrive.
        computing: How many ranks compute (guides the chunk sizes).
        ft: Whether lost workers are survived (ULFM on).
        task_timeout: Seconds a task may run before ``FarmTimeout``.
    """

    def __init__(
        self,
        comm,
        root: int,
        host: str,
        setup: Setup,
        stats: FarmStats,
        computing: int,
        *,
        ft: bool,
        task_timeout: float | None,
    ):
        self.open_tasks: dict[int, Call] = {}
        super().__init__(
            comm, root, host, self.open_tasks, [], setup, stats,  # type: ignore[arg-type]
            ft=ft, stop_on_error=False, task_timeout=task_timeout,
        )  # fmt: skip
        #: index -> the future of every task added and not yet resolved
        self.futures: dict[int, Future] = {}
        self.computing = max(1, computing)
        #: rank -> the chunks it holds, oldest first, with when each was sent
        self.sent: dict[int, deque[tuple[list[int], float]]] = {}
        self.closing = False
        self.lock = threading.RLock()  # type: ignore[assignment]
        self.ready = threading.Condition(self.lock)
        self.woken = threading.Event()
        self.backoff = poll.Backoff(sleep=self._nap)

    def _nap(self, seconds: float) -> None:
        if self.woken.wait(seconds):
            self.woken.clear()
            self.backoff.reset()

    def wake(self) -> None:
        """Cut the driving thread's sleep short: there is work for it."""
        self.woken.set()

    # -- feeding ----------------------------------------------------------------

    def add(self, items: list[tuple[int, Call, Future]]) -> None:
        """Queue tasks, then hand work to every parked worker."""
        with self.lock:
            for index, task, future in items:
                self.open_tasks[index] = task
                self.futures[index] = future
                self.chunks.append([index])
            self.ready.notify()
        while self.parked and self.chunks:
            self.dispatch(self.parked.pop(0))
        for rank, held in list(self.sent.items()):
            if not self.chunks:
                break
            if 0 < len(held) < DEPTH:
                self.dispatch(rank)

    def close(self) -> None:
        """No more tasks will come: the root's compute thread may end."""
        with self.lock:
            self.closing = True
            self.ready.notify_all()

    def purge_cancelled(self) -> None:
        """Forget queued tasks whose futures were cancelled."""
        with self.lock:
            kept = []
            for chunk in self.chunks:
                live = [i for i in chunk if not self._drop_if_cancelled(i)]
                if live:
                    kept.append(live)
            self.chunks.clear()
            self.chunks.extend(kept)

    def _drop_if_cancelled(self, index: int) -> bool:
        future = self.futures[index]
        if not future.cancelled():
            return False
        del self.futures[index], self.open_tasks[index]
        return True

    # -- handing out ------------------------------------------------------------

    def take(self) -> list[int] | None:
        """Cut the next chunk from the waiting tasks, or None if none wait.

        Marks each future running; one cancelled meanwhile is dropped.
        """
        with self.lock:
            while self.chunks and not self.failed:
                share = max(1, len(self.chunks) // (2 * self.computing))
                chunk: list[int] = []
                for _ in range(share):
                    if not self.chunks:
                        break
                    for index in self.chunks.popleft():
                        future = self.futures[index]
                        # Work requeued from a lost worker is running already.
                        if future.running() or future.set_running_or_notify_cancel():
                            chunk.append(index)
                        else:
                            del self.futures[index], self.open_tasks[index]
                if chunk:
                    return chunk
            return None

    def dispatch(self, rank: int) -> None:
        """Top ``rank`` up to ``DEPTH`` chunks, or park it if it holds none."""
        held = self.sent.setdefault(rank, deque())
        while len(held) < DEPTH and (indices := self.take()) is not None:
            try:
                request = _wire.isend(self.comm, self.payload(indices), rank, Tag.TASK)
            except (pickle.PicklingError, TypeError, AttributeError):
                # mpi4py pickles before sending, so nothing was sent: fail the
                # tasks that cannot travel and send the others.
                indices = self._fail_unpicklable(indices)
                if not indices:
                    continue
                request = _wire.isend(self.comm, self.payload(indices), rank, Tag.TASK)
            held.append((indices, time.perf_counter()))
            self.requests.append(request)
        self._note(rank)
        if not held and rank not in self.parked:
            self.parked.append(rank)

    def _note(self, rank: int) -> None:
        """Keep ``in_flight`` in step with the chunks ``rank`` holds."""
        held = self.sent.get(rank)
        if held:
            self.in_flight[rank] = ([i for chunk, _ in held for i in chunk], held[0][1])
        else:
            self.in_flight.pop(rank, None)

    def on_result(self, rank: int, outcomes: list[Outcome], busy: float) -> None:
        """Note ``rank``'s finished chunk (its oldest) and top it up."""
        held = self.sent[rank]
        held.popleft()
        if held:  # the next chunk starts now
            held[0] = (held[0][0], time.perf_counter())
        self._count(rank, outcomes, busy)
        self.dispatch(rank)

    def recover(self) -> None:
        """As the farm's, and forget what the lost ranks held."""
        super().recover()
        for lost in self.stats.lost:
            self.sent.pop(lost.rank, None)

    def _fail_unpicklable(self, indices: list[int]) -> list[int]:
        kept = []
        for index in indices:
            try:
                pickle.dumps(self.open_tasks[index], protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                error = describe_error(exc, index, self.open_tasks[index], self.root, self.host)
                self.resolve([(index, None, error)])
            else:
                kept.append(index)
        return kept

    def _compute_here(self) -> None:
        """The root's helper thread: compute on the root's spare core as work comes."""
        try:
            fn = prepare(self.setup)
            while True:
                with self.ready:
                    while not self.chunks and not self.closing:
                        self.ready.wait()
                    indices = self.take()
                    if indices is None:
                        if self.closing:
                            return
                        continue
                    payload = self.payload(indices)
                    self.computing_here = (indices, time.perf_counter())
                outcomes, busy = run_chunk(fn, payload, self.root, self.host)
                self.local.put((sendable_batch(outcomes, payload, self.root, self.host), busy))
                self.computing_here = None
                self.wake()
        except BaseException as exc:  # never lose a chunk silently
            self.helper_error = exc

    def compute_lost_share(self) -> None:
        """Every worker is lost and the root has no thread: compute one chunk here."""
        if self.chunks and not self._workers_left():
            indices = self.take()
            if indices is not None:
                outcomes, busy = run_chunk(
                    prepare(self.setup), self.payload(indices), self.root, self.host
                )
                self.local.put((outcomes, busy))
                self.stats.worker(self.root)

    # -- taking in --------------------------------------------------------------

    def resolve(self, outcomes: list[Outcome]) -> None:
        """Set each outcome's future: its value, or the task's exception."""
        for index, value, error in outcomes:
            with self.lock:
                future = self.futures.pop(index, None)
                self.open_tasks.pop(index, None)
            if future is None or future.done():
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(task_exception(error))

    def fail_all(self, exc: BaseException) -> None:
        """Fail every future not yet resolved with ``exc``."""
        with self.lock:
            futures = list(self.futures.values())
            self.futures.clear()
            self.open_tasks.clear()
            self.chunks.clear()
            self.closing = True
            self.ready.notify_all()
        for future in futures:
            if not future.done() and (future.running() or future.set_running_or_notify_cancel()):
                future.set_exception(exc)

    def busy(self) -> bool:
        """Whether any task is still queued, running, or its outcome unread."""
        return bool(self.futures or self.in_flight or not self.local.empty())


def task_exception(error: TaskError) -> BaseException:
    """The exception a failed task's future raises: the original one when it
    travelled (its ``__cause__`` holds the remote traceback), else the
    ``TaskError``."""
    return error.exception if error.exception is not None else error
