"""A ``concurrent.futures.Executor`` over a communicator, on the task farm.

Every rank enters the block together, as with mpi4py's ``MPICommExecutor``::

    with FarmExecutor(comm, root=0) as ex:
        if ex is not None:  # the root
            future = ex.submit(pow, 2, 10)
            print(future.result())

On the root ``ex`` is the executor; the other ranks serve tasks inside
``__enter__`` and get ``None`` once the root leaves the block. Nothing is
spawned.

On the root one thread, started on entry, makes every MPI call of the
executor: it hands queued tasks to workers (the farm's open dispatcher,
:mod:`ringmpi.farm._open`), takes in results and sets the futures. The
caller's thread only queues tasks and waits on futures, so futures complete,
and callbacks run, whether or not anyone waits on them. The thread sleeps
between polls as the farm does (:mod:`ringmpi.base.poll`), and a submit cuts
its sleep short. Starting the farm, queueing tasks and the thread are in
:mod:`ringmpi.farm.service`.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from typing import Any

from ..base.errors import hint_on_none, raised_alike
from ..farm import FarmStats
from ..farm.service import (
    FarmBroken,
    Service,
    UnpicklableCallable,
    UsageError,
    check_callable,
    check_comm,
    check_initializer,
    start,
)
from . import _hosted

__all__ = ["FarmBroken", "FarmExecutor", "Service", "UnpicklableCallable", "UsageError", "start"]


class FarmExecutor(Executor):
    """A ``concurrent.futures.Executor`` whose workers are the ranks of ``comm``.

    Every rank enters ``with FarmExecutor(comm, root=0) as ex:``; ``ex`` is the
    executor on the root and None elsewhere (those ranks serve until the root
    leaves the block). With one rank, or when the root's node has a core to
    spare, the root computes tasks too, in a thread.

    Args:
        comm: The communicator (default ``MPI.COMM_WORLD``); any intracommunicator.
        root: The rank that submits tasks.
        cores: Cores per node (default ``RINGMPI_CORES`` or detected): at most
            this many ranks of a node compute.
        task_timeout: Seconds one task may run; past it every pending future
            fails with ``FarmTimeout`` and leaving the block raises it (the
            worker cannot be interrupted: end the job).
        fault_tolerant: Under ``mpiexec --with-ft ulfm``, a lost worker's tasks
            run again elsewhere instead of failing.
        initializer: Called as ``initializer(*initargs)`` on each computing
            rank before its first task.
        initargs: Arguments for ``initializer``.
        memory_limit: Bytes (or ``"512M"``, ``"2G"``) of private memory a
            worker may hold while it runs a task; a task past it fails with
            ``MemoryError`` naming the limit (see ``ringmpi.farm.Farm``).
        shared: Read-only data for the tasks, read on the root: its numpy
            arrays once per node in shared memory, reached in tasks with
            ``ringmpi.farm.shared()`` until the executor shuts down (as
            ``farm_map``'s ``shared``).

    Under ``python -m ringmpi.run script.py`` the script runs on rank 0 alone
    and creates the executor there (no ``comm``, no ``if ex is not None``):
    the other ranks serve it, and it may also be used without ``with`` as
    any ``concurrent.futures`` executor, starting at its first task.
    """

    def __init__(
        self,
        comm=None,
        root: int = 0,
        *,
        cores: int | None = None,
        task_timeout: float | None = None,
        fault_tolerant: bool = False,
        initializer: Callable[..., Any] | None = None,
        initargs: Sequence[Any] = (),
        memory_limit: int | str | None = None,
        shared: Any = None,
    ):
        self._comm = check_comm(comm, root)
        self._default_comm = comm is None
        check_initializer(initializer)
        self._root = root
        self._options: dict[str, Any] = {
            "cores": cores,
            "task_timeout": task_timeout,
            "fault_tolerant": fault_tolerant,
            "initializer": initializer,
            "initargs": initargs,
            "memory_limit": memory_limit,
            "shared": shared,
        }
        self._service: Service | None = None
        self._entered = False
        self._closed = False  # shut down before it started (under ringmpi.run)
        self._hosted = _hosted.current() if _hosted.is_world(comm) else None
        if self._hosted is not None and root != self._hosted.root:
            raise ValueError(
                f"under ringmpi.run the script runs on rank 0, so root must be 0, not {root}"
            )

    def __enter__(self) -> FarmExecutor | None:  # type: ignore[override]
        if self._entered:
            raise UsageError(
                "this FarmExecutor is in use already: leave its block before entering it again"
            )
        self._entered = True
        if self._hosted is not None:
            self._hosted.begin(self._options)
        service, serve = start(self._comm, self._root, **self._options)
        if serve is not None:
            serve()
            if self._default_comm:  # a plain script's habit
                speaks = speaks_for_workers(self._comm, self._root)
                hint_on_none("FarmExecutor", "ex", speaks)
            return None
        self._service = service
        if self._hosted is not None and service is not None:
            self._hosted.started(service, cancel=False)
            # Dropped without shutdown, it lets the next executor or pool
            # have the workers once its tasks are done (as ProcessPoolExecutor).
            weakref.finalize(self, service.shutdown, False).atexit = False  # type: ignore[misc]
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Entered again afterwards, it starts a new farm (as mpi4py's
        # MPICommExecutor makes a new executor); stats stay the last one's.
        self._entered = False
        if self._service is None:
            return
        self.shutdown(wait=True, cancel_futures=exc is not None)
        broken = self._service.broken
        if exc is None and broken is not None:
            raise broken

    @property
    def stats(self) -> FarmStats:
        """What the farm did: ranks computing, tasks and busy time per rank."""
        return self._running().stats

    @property
    def workers(self) -> int:
        """How many ranks compute tasks (the root included when it does)."""
        return self._running().workers

    @property
    def num_workers(self) -> int:
        """:attr:`workers`, or 0 once shut down or broken (``mpi4py.futures``' name)."""
        service = self._running()
        return 0 if service.shut or service.broken is not None else service.workers

    def bootup(self, wait: bool = True) -> FarmExecutor:
        """Return the executor, ready for tasks (``mpi4py.futures``' name): it
        started when entered, or under ``ringmpi.run`` it starts now."""
        if self._running().shut:
            raise RuntimeError("cannot bootup after shutdown")
        return self

    def _running(self) -> Service:
        if self._service is None and self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self._service is None and self._hosted is not None and not self._entered:
            self.__enter__()  # a script's executor starts at its first task
        if self._service is None:
            error = UsageError(
                "use the executor inside 'with FarmExecutor(...) as ex:' on every rank, "
                "and only the root's ex (the others get None)"
            )
            raise raised_alike(error, speaks=self._comm.Get_rank() == self._root)
        return self._service

    def __reduce__(self):
        raise TypeError(
            "a FarmExecutor cannot be sent to a task: use it on the root only "
            "(a task that needs one can start its own farm on its own communicator)"
        )

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)``; return its ``Future``.

        ``fn``, the arguments and the result must pickle unless the root runs
        the task itself. A task that raises makes its future raise the same
        exception, its ``__cause__`` the remote traceback.
        """
        service = self._running()
        check_callable(fn)
        return service.submit_many([(fn, args, kwargs)])[0]

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        unordered: bool = False,
    ) -> Iterator[Any]:
        """Like ``concurrent.futures.Executor.map``: results in order, lazily.

        Iterables with a length are read at once and every task is queued;
        the results come as the returned iterator reaches them. An iterator
        without a length (a generator, ``itertools.count()``) is read as the
        results are taken, at most ``256`` tasks per worker ahead, so an endless
        one works; ``buffersize`` sets that bound for any input (as
        ``mpi4py.futures`` and Python 3.14 do). Waiting past ``timeout``
        seconds (from this call) raises ``TimeoutError``. ``chunksize`` tasks
        travel as one; queued tasks travel together anyway when they wait.
        ``unordered=True`` yields the results as they complete.
        """
        sized = all(hasattr(it, "__len__") for it in iterables)
        return self._map(fn, zip(*iterables), sized, timeout, chunksize, buffersize, unordered)

    def starmap(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Sequence[Any]],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        unordered: bool = False,
    ) -> Iterator[Any]:
        """``fn(*args)`` for each ``args`` of ``iterable``, as :meth:`map` runs
        ``fn`` (``itertools.starmap``; ``mpi4py.futures``' ``starmap``)."""
        sized = hasattr(iterable, "__len__")
        return self._map(fn, iter(iterable), sized, timeout, chunksize, buffersize, unordered)

    def _map(
        self,
        fn: Callable[..., Any],
        argsets: Iterator[Any],
        sized: bool,
        timeout: float | None,
        chunksize: int,
        buffersize: int | None,
        unordered: bool,
    ) -> Iterator[Any]:
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0.")
        end = None if timeout is None else timeout + time.monotonic()
        service = self._running()
        check_callable(fn)
        flatten = chunksize > 1
        calls: Iterator[Any]
        if flatten:
            chunks = iter(lambda: list(itertools.islice(argsets, chunksize)), [])
            calls = ((_starmap_chunk, (fn, chunk), {}) for chunk in chunks)
        else:
            calls = ((fn, tuple(args), {}) for args in argsets)
        if buffersize is None and sized:
            futures = service.submit_many(calls)
            if unordered:
                return _completed(futures, end, flatten)
            return _ordered(futures, end, flatten)
        window = buffersize or PULLED * max(1, service.workers)
        return windowed(service.submit_many, calls, window, end, flatten, unordered)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more tasks; with ``wait``, return once every task is done
        and the workers are released. ``cancel_futures`` cancels the tasks not
        yet sent."""
        if self._service is not None:
            self._service.shutdown(wait, cancel_futures)
        elif self._hosted is not None:
            self._closed = True  # never started: it never will


def _starmap_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    return [fn(*args) for args in chunk]


#: Tasks an iterator without a length is read ahead by, per worker.
PULLED = 256


def windowed(
    submit: Callable[[Iterable[Any]], list[Future]],
    calls: Iterator[Any],
    window: int,
    end: float | None,
    flatten: bool,
    unordered: bool,
    defer: bool = False,
) -> Iterator[Any]:
    """Submit ``calls`` at most ``window`` ahead of the results taken; yield
    the results (in order, or as they complete). The first window is
    submitted now, before the first result is asked for; what reading
    ``calls`` raises comes at once, or with ``defer`` after the results of
    the calls read before it (as ``multiprocessing``'s ``imap`` does)."""
    pending: deque[Future] = deque()
    finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
    #: why no more could be submitted (the executor was shut down): raised
    #: once the results already submitted are all taken
    stopped: list[BaseException] = []

    #: what reading ``calls`` raised (with ``defer``): raised once the results
    #: of the calls read before it are all taken, as multiprocessing's imap does
    broke: list[BaseException] = []

    def more(count: int) -> None:
        if stopped or broke:
            return
        batch: list[Any] = []
        try:
            batch.extend(itertools.islice(calls, count))
        except Exception as exc:
            if not defer:
                raise
            broke.append(exc)
        if not batch:
            return
        try:
            futures = submit(batch)
        except (RuntimeError, ValueError) as exc:  # shut down or closed meanwhile
            stopped.append(exc)
            return
        for future in futures:
            pending.append(future)
            if unordered:
                future.add_done_callback(finished.put)

    more(window)

    def left() -> float | None:
        return None if end is None else max(0.0, end - time.monotonic())

    def results() -> Iterator[Any]:
        try:
            while pending:
                if unordered:
                    try:
                        future = finished.get(timeout=left())
                    except queue.Empty:
                        raise concurrent.futures.TimeoutError from None
                    pending.remove(future)
                else:
                    future = pending.popleft()
                more(1)
                values = future.result(left())
                # Nothing here holds a result once it is yielded (bpo-14406).
                values = values if flatten else [values]
                del future
                yield from _drain(values)
            if broke:
                raise broke[0]
            if stopped:
                raise RuntimeError(
                    "the executor was shut down before this map's input was all read"
                ) from stopped[0]
        finally:
            for future in pending:
                future.cancel()

    return results()


def _completed(futures: list[Future], end: float | None, flatten: bool) -> Iterator[Any]:
    """Yield the futures' results as they complete; cancel the rest if left early.

    Each future is let go of as its result is yielded (``futures`` is emptied)."""
    pending = set(futures)
    futures.clear()

    def results() -> Iterator[Any]:
        timeout = None if end is None else end - time.monotonic()
        try:
            for future in concurrent.futures.as_completed(pending, timeout):
                pending.discard(future)
                values = future.result()
                # Nothing here holds a result once it is yielded (bpo-14406).
                values = values if flatten else [values]
                del future
                yield from _drain(values)
        finally:
            for future in pending:
                future.cancel()

    return results()


def _ordered(futures: list[Future], end: float | None, flatten: bool) -> Iterator[Any]:
    """Yield the futures' results in order; cancel the rest if left early."""

    def results() -> Iterator[Any]:
        try:
            futures.reverse()
            while futures:
                values = futures.pop().result(None if end is None else end - time.monotonic())
                # Nothing here holds a result once it is yielded (bpo-14406).
                values = values if flatten else [values]
                yield from _drain(values)
        finally:
            for future in futures:
                future.cancel()

    return results()


def _drain(values: list[Any]) -> Iterator[Any]:
    """Yield the items of ``values`` in order, each dropped from it as it goes,
    so that a result the caller let go of is not kept alive here."""
    values.reverse()
    while values:
        yield values.pop()


def speaks_for_workers(comm, root: int) -> bool:
    """Whether this rank speaks for the workers: the lowest that is not the root."""
    return comm.Get_rank() == (1 if root == 0 else 0)
