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
between polls as the farm does (:mod:`ringmpi.poll`), and a submit cuts its
sleep short.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future
from typing import Any

from . import config, poll
from .errors import RingmpiError
from .farm import _ft
from .farm._open import Call, OpenDispatcher, apply
from .farm._outcome import FarmStats, WorkerStats
from .farm._plan import node_cores, plan_workers
from .farm._start import join
from .farm._worker import Setup, serve_dynamic

log = logging.getLogger("ringmpi.executor")


class FarmBroken(BrokenExecutor):
    """The executor's root thread stopped (a task timed out, or MPI failed);
    every future not yet done fails with this, or with the error itself."""


class Service:
    """The root's side of an executor or pool: queue tasks, drive the farm.

    Created on the root by :func:`start`; see there for the arguments.
    """

    def __init__(self, comm, root: int, layout, options: dict[str, Any]):
        from mpi4py import MPI

        self.comm = comm
        self.root = root
        self.ft = options["ft"]
        self.host = socket.gethostname()
        hosts = [host for host, _ in layout]
        try:
            override = options["cores"] or config.cores()
        except ValueError as exc:
            raise RingmpiError(str(exc)) from None
        cores = [override or node for _, node in layout]
        active, idle, root_computes = plan_workers(hosts, cores, root)
        root_computes = root_computes or not active
        self.stats = FarmStats(idle_ranks=idle, root_computes=root_computes, hosts=hosts)
        self.stats.workers = [WorkerStats(r, hosts[r]) for r in active]
        if root_computes:
            self.stats.workers.insert(0, WorkerStats(root, self.host))
        #: How many ranks compute tasks (the root included when it does).
        self.workers = len(active) + int(root_computes)
        setup: Setup = (apply, options["initializer"], tuple(options["initargs"]))
        self.dispatcher = OpenDispatcher(
            comm, root, self.host, setup, self.stats, self.workers,
            ft=self.ft, task_timeout=options["task_timeout"],
        )  # fmt: skip
        self._queue: list[tuple[int, Call, Future]] = []
        self._lock = threading.Lock()
        self._count = itertools.count()
        self._closing = False
        self.shut = False
        self.broken: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(active, idle, root_computes), daemon=True,
            name=f"ringmpi-executor-root-{comm.Get_rank()}",
        )  # fmt: skip
        if MPI.Query_thread() < MPI.THREAD_MULTIPLE and comm.Get_size() > 1:
            warnings.warn(
                "MPI was initialised without MPI_THREAD_MULTIPLE: the executor's thread "
                "makes MPI calls, so make none on the root while the executor runs",
                RuntimeWarning,
                stacklevel=3,
            )
        self._thread.start()

    # -- the caller's thread -----------------------------------------------------

    def submit_many(self, calls: Iterable[Call]) -> list[Future]:
        """Queue ``(fn, args, kwargs)`` tasks; return their futures in order."""
        futures = []
        with self._lock:
            if self.broken is not None:
                raise FarmBroken(f"the executor stopped: {self.broken}") from self.broken
            if self.shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
            for call in calls:
                future: Future = Future()
                self._queue.append((next(self._count), call, future))
                futures.append(future)
        self.dispatcher.wake()
        return futures

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Take no more tasks; release the workers once every task is done."""
        with self._lock:
            self.shut = True
            queued = [future for _, _, future in self._queue]
        if cancel_futures:
            with self.dispatcher.lock:
                queued += list(self.dispatcher.futures.values())
            for future in queued:
                future.cancel()
        self._closing = True
        self.dispatcher.wake()
        if wait:
            self.join()

    def join(self) -> None:
        """Wait until the root's thread has released the workers."""
        while self._thread.is_alive():
            self._thread.join(0.5)

    # -- the root's thread ---------------------------------------------------------

    def _take_queue(self) -> bool:
        with self._lock:
            items, self._queue = self._queue, []
        if items:
            self.dispatcher.add(items)
        return bool(items)

    def _run(self, active: Sequence[int], idle: Sequence[int], root_computes: bool) -> None:
        from mpi4py import MPI

        d = self.dispatcher
        try:
            d.start(active, idle, root_computes)
            while True:
                self._take_queue()
                if self._closing:
                    d.purge_cancelled()
                    with self._lock:
                        empty = not self._queue
                    if empty and not d.busy():
                        break
                d.compute_lost_share()
                for outcomes in d.take_in():
                    d.resolve(outcomes)
            d.close()
            d.drain()
            _end(self.comm, self.ft, failed=bool(self.stats.lost))
            if not self.stats.lost:
                self.comm.Free()
        except BaseException as exc:
            if isinstance(exc, MPI.Exception):
                log.error("the executor's root thread failed: %s", exc)
            with self._lock:
                self.broken = exc
                self.shut = True
                queued = [future for _, _, future in self._queue]
                self._queue = []
            for future in queued:
                future.cancel()
            d.fail_all(exc)
        finally:
            self.done.set()


def _end(comm, ft: bool, failed: bool, backoff: poll.Backoff | None = None) -> None:
    """Leave together: a barrier, or under ULFM an agreement on any loss."""
    if ft:
        _ft.agree_on_failures(comm, failed)
    else:
        poll.barrier(comm, backoff)


def start(
    comm,
    root: int,
    *,
    cores: int | None = None,
    task_timeout: float | None = None,
    fault_tolerant: bool = False,
    initializer: Callable[..., Any] | None = None,
    initargs: Sequence[Any] = (),
):
    """Start the farm behind an executor or a pool; collective over ``comm``.

    Returns:
        ``(service, None)`` on the root, ``(None, serve)`` elsewhere, where
        ``serve()`` serves tasks until the root shuts down.
    """
    from mpi4py import MPI

    if task_timeout is not None and not task_timeout > 0:
        raise ValueError(f"task_timeout must be positive, not {task_timeout}")
    if comm is None:
        comm = MPI.COMM_WORLD
    ft = fault_tolerant and config.ulfm_enabled()
    if fault_tolerant and not ft and comm.Get_rank() == root:
        log.warning(
            "fault tolerance is not active (launch with 'mpiexec --with-ft ulfm'): "
            "a lost worker will end the job"
        )
    # A private communicator keeps the executor's messages apart from the
    # caller's, and lets fault tolerance change only its error handler; the
    # farm's join bounds the wait for a rank that never enters.
    try:
        timeout = config.join_timeout()
    except ValueError as exc:
        raise RingmpiError(str(exc)) from None
    private = join(comm, root, timeout)
    if ft:
        private.Set_errhandler(MPI.ERRORS_RETURN)
    layout = private.gather((socket.gethostname(), node_cores(private)), root=root)
    if private.Get_rank() != root:

        def serve() -> None:
            serve_dynamic(private, root)
            # Ranks that are done wait longer between polls: nothing is urgent.
            _end(private, ft, False, poll.Backoff(cap=max(config.poll_max_sleep(), 5e-3)))
            private.Free()

        return None, serve
    options = {
        "cores": cores,
        "task_timeout": task_timeout,
        "ft": ft,
        "initializer": initializer,
        "initargs": initargs,
    }
    return Service(private, root, layout, options), None


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
    ):
        self._comm = comm
        self._root = root
        self._options: dict[str, Any] = {
            "cores": cores,
            "task_timeout": task_timeout,
            "fault_tolerant": fault_tolerant,
            "initializer": initializer,
            "initargs": initargs,
        }
        self._service: Service | None = None
        self._entered = False

    def __enter__(self) -> FarmExecutor | None:  # type: ignore[override]
        if self._entered:
            raise RuntimeError("a FarmExecutor can be entered only once")
        self._entered = True
        service, serve = start(self._comm, self._root, **self._options)
        if serve is not None:
            serve()
            return None
        self._service = service
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
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

    def _running(self) -> Service:
        if self._service is None:
            raise RuntimeError("use the executor inside 'with FarmExecutor(...) as ex:'")
        return self._service

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)``; return its ``Future``.

        ``fn``, the arguments and the result must pickle unless the root runs
        the task itself. A task that raises makes its future raise the same
        exception, its ``__cause__`` the remote traceback.
        """
        return self._running().submit_many([(fn, args, kwargs)])[0]

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Like ``concurrent.futures.Executor.map``: results in order, lazily.

        The iterables are read at once and every task is queued; the results
        come as the returned iterator reaches them. Waiting past ``timeout``
        seconds (from this call) raises ``TimeoutError``. ``chunksize`` tasks
        travel as one; queued tasks travel together anyway when they wait.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end = None if timeout is None else timeout + time.monotonic()
        service = self._running()
        argsets = zip(*iterables)
        if chunksize == 1:
            futures = service.submit_many((fn, args, {}) for args in argsets)
            return _ordered(futures, end, flatten=False)
        chunks = iter(lambda: list(itertools.islice(argsets, chunksize)), [])
        futures = service.submit_many((_starmap_chunk, (fn, chunk), {}) for chunk in chunks)
        return _ordered(futures, end, flatten=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more tasks; with ``wait``, return once every task is done
        and the workers are released. ``cancel_futures`` cancels the tasks not
        yet sent."""
        if self._service is not None:
            self._service.shutdown(wait, cancel_futures)


def _starmap_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    return [fn(*args) for args in chunk]


def _ordered(futures: list[Future], end: float | None, flatten: bool) -> Iterator[Any]:
    """Yield the futures' results in order; cancel the rest if left early."""

    def results() -> Iterator[Any]:
        try:
            futures.reverse()
            while futures:
                future = futures.pop()
                value = future.result(None if end is None else end - time.monotonic())
                if flatten:
                    yield from value
                else:
                    yield value
        finally:
            for future in futures:
                future.cancel()

    return results()
