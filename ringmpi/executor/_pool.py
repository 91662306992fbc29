"""A ``multiprocessing.Pool`` over a communicator, on the task farm.

Every rank creates the pool. Either the executor's pattern::

    with FarmPool(comm) as pool:
        if pool is not None:  # the root
            print(pool.map(abs, range(-5, 5)))

or schwimmbad's, as emcee's documentation writes it::

    pool = FarmPool()
    if not pool.is_master():
        pool.wait()
        sys.exit(0)
    sampler = emcee.EnsembleSampler(nwalkers, ndim, log_prob, pool=pool)
    ...
    pool.close()

``map`` cuts its input into chunks by default, as ``multiprocessing.Pool.map``
does, so many tiny tasks do not pay a message each.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from multiprocessing.pool import MaybeEncodingError  # type: ignore[attr-defined]  # not in typeshed
from typing import Any

from ..base.errors import hint_on_none
from ..farm import TaskError
from ..farm.service import (
    Service,
    UsageError,
    check_callable,
    check_comm,
    check_initializer,
    start,
    task_exception,
)
from . import _hosted
from ._executor import PULLED, _completed, _ordered, speaks_for_workers, windowed


def _map_chunk(fn: Callable[[Any], Any], chunk: list[Any]) -> list[Any]:
    return [fn(x) for x in chunk]


def _starmap_chunk(fn: Callable[..., Any], chunk: list[Sequence[Any]]) -> list[Any]:
    return [fn(*args) for args in chunk]


# Error lines name a chunk's task as fn(item) or fn over [items], not as
# _map_chunk(fn, [items]) (ringmpi.farm's short_repr reads this).
_map_chunk.applies = "map"  # type: ignore[attr-defined]
_starmap_chunk.applies = "star"  # type: ignore[attr-defined]


class AsyncResult:
    """The result of ``apply_async`` and ``map_async``, as ``multiprocessing``'s.

    Callbacks run on a thread of the root's executor once every part is
    done; the result is ready (``wait``, ``get`` return) once they have
    run, as ``multiprocessing``'s is.
    """

    def __init__(
        self,
        futures: list[Future],
        combine: Callable[[list[Any]], Any],
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ):
        self._futures = futures
        self._combine = combine
        self._callback = callback
        self._error_callback = error_callback
        self._left = len(futures)
        self._lock = threading.Lock()
        #: set once the callbacks have run (None: there are none)
        self._called: threading.Event | None = None
        if callback is not None or error_callback is not None:
            self._called = threading.Event()
            if not futures:
                self._finish()
            for future in futures:
                future.add_done_callback(self._one_done)

    def _one_done(self, _future: Future) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._finish()

    def _finish(self) -> None:
        try:
            error = self._error()
            if error is None:
                if self._callback is not None:
                    self._callback(self._value())
            elif self._error_callback is not None:
                self._error_callback(error)
        finally:
            assert self._called is not None
            self._called.set()

    def _error(self) -> BaseException | None:
        for future in self._futures:
            if future.cancelled():
                return concurrent.futures.CancelledError()
            if future.exception() is not None:
                return future.exception()
        return None

    def _value(self) -> Any:
        return self._combine([future.result() for future in self._futures])

    def ready(self) -> bool:
        """Whether the call has completed (and its callback has run)."""
        if self._called is not None:
            return self._called.is_set()
        return all(future.done() for future in self._futures)

    def successful(self) -> bool:
        """Whether the call completed without raising; ``ValueError`` if not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._error() is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is available or ``timeout`` seconds pass."""
        end = None if timeout is None else time.monotonic() + timeout
        concurrent.futures.wait(self._futures, timeout)
        if self._called is not None:
            self._called.wait(None if end is None else max(0.0, end - time.monotonic()))

    def get(self, timeout: float | None = None) -> Any:
        """Return the result; raise the task's exception, or
        ``multiprocessing.TimeoutError`` after ``timeout`` seconds."""
        self.wait(timeout)
        if not self.ready():
            raise multiprocessing.TimeoutError
        error = self._error()
        if error is not None:
            raise error
        return self._value()


def _pool_exception(error: TaskError) -> BaseException:
    """What a pool's task raises: as the executor's, but a result that could
    not be sent back is ``multiprocessing``'s ``MaybeEncodingError``."""
    if error.unsendable is None or error.exception is None:
        return task_exception(error)
    encoding = MaybeEncodingError(error.exception, None)
    encoding.value = error.unsendable
    encoding.__cause__ = error.exception
    return encoding


def _collected(service: Service) -> None:
    if not service.shut:
        warnings.warn(
            "a running FarmPool was collected: its work not yet started is cancelled "
            "(call close() and join(), or use 'with')",
            ResourceWarning,
            stacklevel=2,
        )
        service.shutdown(wait=False, cancel_futures=True)


def _check_chunksize(chunksize: Any) -> None:
    if not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")


def _flatten(parts: list[list[Any]]) -> list[Any]:
    return [value for part in parts for value in part]


class FarmPool:
    """``multiprocessing.Pool``'s methods over the ranks of ``comm``.

    Collective to create. On the root the pool hands out work; the other
    ranks serve it inside ``wait()`` (or ``__enter__``) until the root closes
    the pool. See :class:`ringmpi.FarmExecutor` for the options.

    Args:
        comm: The communicator (default ``MPI.COMM_WORLD``).
        root: The rank that uses the pool.
        initializer: Called as ``initializer(*initargs)`` on each computing
            rank before its first task.
        initargs: Arguments for ``initializer``.
        cores: Cores per node (default ``RINGMPI_CORES`` or detected).
        task_timeout: Seconds one task may run.
        fault_tolerant: Under ULFM, rerun a lost worker's tasks elsewhere.
        memory_limit: Bytes (or ``"512M"``, ``"2G"``) of private memory a
            worker may hold while it runs a task (see ``FarmExecutor``).
        shared: Read-only data for the tasks, read on the root, reached with
            ``ringmpi.farm.shared()`` until the pool is closed (see ``FarmExecutor``).

    Under ``python -m ringmpi.run script.py`` the script creates the pool on
    rank 0 alone, as with ``multiprocessing.Pool``; the other ranks serve it.
    """

    def __init__(
        self,
        comm=None,
        root: int = 0,
        *,
        initializer: Callable[..., Any] | None = None,
        initargs: Sequence[Any] = (),
        cores: int | None = None,
        task_timeout: float | None = None,
        fault_tolerant: bool = False,
        memory_limit: int | str | None = None,
        shared: Any = None,
    ):
        check_initializer(initializer)  # before any worker is called
        hosted = _hosted.current() if _hosted.is_world(comm) else None
        if hosted is not None:
            if root != hosted.root:
                raise ValueError(
                    f"under ringmpi.run the script runs on rank 0, so root must be 0, not {root}"
                )
            hosted.begin(
                {"task_timeout": task_timeout, "memory_limit": memory_limit,
                 "fault_tolerant": fault_tolerant}
            )  # fmt: skip
        given = comm is not None
        comm = check_comm(comm, root)
        #: made without a communicator (a plain script's habit): whether this
        #: rank speaks for the workers if one dies of the None it was given
        self._speaks: bool | None = None if given else speaks_for_workers(comm, root)
        self._service, self._serve = start(
            comm, root, cores=cores, task_timeout=task_timeout,
            fault_tolerant=fault_tolerant, initializer=initializer, initargs=initargs,
            memory_limit=memory_limit, shared=shared,
        )  # fmt: skip
        self._closed = False
        if hosted is not None and self._service is not None:
            hosted.started(self._service, cancel=True)
        if self._service is not None:
            # A root that forgets to close the pool must not leave the
            # workers waiting forever when it exits: what has not started
            # is cancelled then, as terminate() does (the hook holds the
            # service weakly, not the pool).
            self._service.exit_cancels = True
            self._service.futures.exception_of = _pool_exception
            # Collected while running, it is terminated with a ResourceWarning,
            # as multiprocessing's is (at exit, the service's own hook acts).
            weakref.finalize(self, _collected, self._service).atexit = False  # type: ignore[misc]

    # -- roles (schwimmbad's names) ---------------------------------------------

    def is_master(self) -> bool:
        """Whether this rank is the root, which uses the pool."""
        return self._service is not None

    def is_worker(self) -> bool:
        """Whether this rank serves tasks."""
        return self._service is None

    def wait(self, callback: Callable[[], Any] | None = None) -> None:
        """On a worker, serve tasks until the root closes the pool, then call
        ``callback()`` if given (as schwimmbad's ``MPIPool.wait``); on the
        root, return at once."""
        serve, self._serve = self._serve, None
        if serve is not None:
            serve()
            if callback is not None:
                callback()

    def __enter__(self) -> FarmPool | None:
        if self._service is None:
            self.wait()
            if self._speaks is not None:
                hint_on_none("FarmPool", "pool", self._speaks)
            return None
        if self._closed:
            raise ValueError("Pool not running")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._service is not None:
            if exc is None:
                self.close()
                self.join()
            else:
                self.terminate()

    @property
    def workers(self) -> int:
        """How many ranks compute tasks (the root included when it does)."""
        return self._root().workers

    @property
    def size(self) -> int:
        """How many ranks compute tasks, as schwimmbad's ``MPIPool.size``."""
        return self.workers

    @property
    def _processes(self) -> int:
        # multiprocessing.Pool's name, which some callers (dynesty) read.
        return self.workers

    # -- work -----------------------------------------------------------------

    def _root(self) -> Service:
        if self._service is None:
            raise UsageError("only the root uses the pool; the other ranks call wait()")
        return self._service

    def __reduce__(self):
        raise TypeError("a FarmPool cannot be sent to a task: use it on the root only")

    def _submit(self, calls: Iterable[Any]) -> list[Future]:
        service = self._root()
        if self._closed:
            raise ValueError("Pool not running")
        return service.submit_many(calls)

    def _check(self, func: Callable[..., Any]) -> None:
        self._root()
        if self._closed:
            raise ValueError("Pool not running")
        check_callable(func)

    def _chunks(self, items: list[Any], chunksize: int | None) -> list[list[Any]]:
        if chunksize is None:
            chunksize, extra = divmod(len(items), self._root().workers * 4)
            chunksize += bool(extra)
            chunksize = max(1, chunksize)
        _check_chunksize(chunksize)
        return [items[i : i + chunksize] for i in range(0, len(items), chunksize)]

    def apply(self, func: Callable[..., Any], args: Sequence[Any] = (), kwds=None) -> Any:
        """``func(*args, **kwds)`` on a worker; wait for the result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Sequence[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:
        """``func(*args, **kwds)`` on a worker; return an ``AsyncResult``."""
        self._check(func)
        futures = self._submit([(func, tuple(args), dict(kwds or {}))])
        return AsyncResult(futures, lambda values: values[0], callback, error_callback)

    def map(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
    ) -> list:
        """``[func(x) for x in iterable]`` over the workers, in chunks.

        ``callback(result)``, if given, is called here for each result as it
        arrives (schwimmbad's ``map(worker, tasks, callback)``; a callable in
        ``chunksize``'s place is taken for it).
        """
        if callable(chunksize) and callback is None:
            chunksize, callback = None, chunksize
        if callback is None:
            return self.map_async(func, iterable, chunksize).get()
        self._check(func)
        futures = self._map_futures(_map_chunk, func, iterable, chunksize)
        for future in concurrent.futures.as_completed(futures):
            for value in future.result():
                callback(value)
        return _flatten([future.result() for future in futures])

    def batched_map(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], *args: Any, **kwargs: Any
    ) -> list:
        """schwimmbad's ``batched_map``: the tasks cut into :attr:`size` batches,
        each sent as ``((start, end), tasks[start:end])``; return the results
        of ``func`` for the batches, in order. Further arguments go to :meth:`map`."""
        tasks = list(iterable)
        count = max(1, min(self.size, len(tasks)))
        size, extra = divmod(len(tasks), count)
        batches, start = [], 0
        for i in range(count if tasks else 0):
            end = start + size + (i < extra)
            batches.append(((start, end), tasks[start:end]))
            start = end
        return self.map(func, batches, *args, **kwargs)

    def map_async(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:
        """Like ``map``; return an ``AsyncResult``."""
        return self._map_async(_map_chunk, func, iterable, chunksize, callback, error_callback)

    def starmap(
        self, func: Callable[..., Any], iterable: Iterable[Sequence[Any]], chunksize=None
    ) -> list:
        """``[func(*args) for args in iterable]`` over the workers, in chunks."""
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Sequence[Any]],
        chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:
        """Like ``starmap``; return an ``AsyncResult``."""
        return self._map_async(_starmap_chunk, func, iterable, chunksize, callback, error_callback)

    def _map_async(self, runner, func, iterable, chunksize, callback, error_callback):
        self._check(func)
        futures = self._map_futures(runner, func, iterable, chunksize)
        return AsyncResult(futures, _flatten, callback, error_callback)

    def _map_futures(self, runner, func, iterable, chunksize) -> list[Future]:
        chunks = self._chunks(list(iterable), chunksize)
        return self._submit((runner, (func, chunk), {}) for chunk in chunks)

    def imap(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> Iterator[Any]:
        """Results of ``func`` over ``iterable`` in order, as they come.

        The iterable is read as results are taken, a bounded way ahead, so an
        endless one works."""
        return self._imap(func, iterable, chunksize, unordered=False)

    def imap_unordered(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> Iterator[Any]:
        """Results of ``func`` over ``iterable`` in the order they finish; the
        iterable is read as ``imap`` reads it."""
        return self._imap(func, iterable, chunksize, unordered=True)

    def _imap(self, func, iterable, chunksize: int, unordered: bool) -> Iterator[Any]:
        _check_chunksize(chunksize)
        self._check(func)
        service = self._root()
        if hasattr(iterable, "__len__"):  # all of it now, as multiprocessing does
            futures = self._submit(
                (_map_chunk, (func, chunk), {}) for chunk in self._chunks(list(iterable), chunksize)
            )
            return _completed(futures, None, True) if unordered else _ordered(futures, None, True)
        # An iterator is read as results are taken, so an endless one works;
        # close() before it is read to the end raises once the rest is taken.
        items = iter(iterable)
        chunks = iter(lambda: list(itertools.islice(items, max(1, chunksize))), [])
        calls: Iterator[Any] = ((_map_chunk, (func, chunk), {}) for chunk in chunks)
        window = PULLED * max(1, service.workers)
        return windowed(self._submit, calls, window, None, True, unordered, defer=True)

    # -- ending -----------------------------------------------------------------

    def close(self) -> None:
        """Take no more work; the workers leave once the queued work is done."""
        self._closed = True
        if self._service is not None:
            self._service.shutdown(wait=False)

    def terminate(self) -> None:
        """Cancel the work not yet sent and release the workers."""
        self._closed = True
        if self._service is not None:
            self._service.shutdown(wait=True, cancel_futures=True)

    def join(self) -> None:
        """Wait for the workers to leave; call ``close`` or ``terminate`` first."""
        if self._service is None:
            return
        if not self._closed:
            raise ValueError("Pool is still running")
        self._service.join()
