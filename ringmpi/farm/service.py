"""The farm behind an executor or a pool: the seam that :mod:`ringmpi.executor` is built on.

:func:`start` is collective. On the root it returns a :class:`Service`, whose
public methods the caller's thread uses: they only queue tasks and their
futures, and wake the root's MPI thread. That thread, started when the
service is created, makes every MPI call of the executor: it moves the queued
tasks to the farm's open dispatcher (:mod:`._open`), takes in results and sets
the futures, and at the end releases the workers. The other ranks get a
function that serves tasks.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import BrokenExecutor, Future
from typing import Any

from ..base import config, poll
from ..base.errors import RingmpiError
from ._ft import leave
from ._open import Call, OpenDispatcher, apply
from ._outcome import FarmStats, WorkerStats
from ._plan import node_cores, plan_workers
from ._start import join
from ._worker import Setup, serve_dynamic

log = logging.getLogger("ringmpi.executor")


class FarmBroken(BrokenExecutor):
    """The executor's root thread stopped (a task timed out, or MPI failed);
    every future not yet done fails with this, or with the error itself."""

    # Named where users import it from, as in tracebacks.
    __module__ = "ringmpi.executor"


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
        active, idle, root_computes = self._plan(layout, options)
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

    def _plan(self, layout, options: dict[str, Any]) -> tuple[list[int], list[int], bool]:
        """Decide which ranks compute; set ``stats``; return ``(active, idle, root_computes)``."""
        hosts = [host for host, _ in layout]
        try:
            override = options["cores"] or config.cores()
        except ValueError as exc:
            raise RingmpiError(str(exc)) from None
        cores = [override or node for _, node in layout]
        active, idle, root_computes = plan_workers(hosts, cores, self.root)
        root_computes = root_computes or not active
        self.stats = FarmStats(idle_ranks=idle, root_computes=root_computes, hosts=hosts)
        self.stats.workers = [WorkerStats(r, hosts[r]) for r in active]
        if root_computes:
            self.stats.workers.insert(0, WorkerStats(self.root, self.host))
        return active, idle, root_computes

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
            leave(self.comm, self.ft, failed=bool(self.stats.lost))
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
    private = _join(comm, root, ft)
    layout = private.gather((socket.gethostname(), node_cores(private)), root=root)
    if private.Get_rank() != root:

        def serve() -> None:
            serve_dynamic(private, root)
            # Ranks that are done wait longer between polls: nothing is urgent.
            leave(private, ft, False, poll.Backoff(cap=max(config.poll_max_sleep(), 5e-3)))
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


def _join(comm, root: int, ft: bool):
    """Return the private communicator, once every rank has joined."""
    from mpi4py import MPI

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
    return private
