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

import atexit
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import numbers
import pickle
import queue
import socket
import threading
import time
import types
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import BrokenExecutor, Future
from typing import Any

from ..base import config, mpilib, poll
from ..base.errors import RingmpiError
from . import _leftovers as leftovers
from . import _memory, _shared, _stop
from . import _start as _starting
from ._engine import GROWTH, Engine, Hooks
from ._ft import leave
from ._outcome import (
    FarmStats,
    FarmTimeout,
    InitializerError,
    Outcome,
    TaskError,
    WorkerStats,
    check_not_in_task,
)
from ._plan import computing, plan_ranks, rank_facts
from ._start import join
from ._worker import Setup, serve_dynamic

log = logging.getLogger("ringmpi.executor")


class FarmBroken(BrokenExecutor):
    """The executor's root thread stopped (a task timed out, or MPI failed);
    every future not yet done fails with this, or with the error itself."""

    # Named where users import it from, as in tracebacks.
    __module__ = "ringmpi.executor"


class UsageError(RingmpiError, RuntimeError):
    """The executor or the pool was used wrongly; raised alike on every rank."""

    collective = True
    # Named where users import it from, as in tracebacks.
    __module__ = "ringmpi.executor"


class UnpicklableCallable(RingmpiError, pickle.PicklingError):
    """The callable given to the executor or the pool cannot travel to the workers."""

    __module__ = "ringmpi.executor"


def check_callable(fn: Any) -> None:
    """Refuse ``fn`` where it cannot be sent to the workers: a lambda, or a
    function or class defined inside a function (pickle sends functions and
    classes by name). Cheap: nothing is pickled.

    Raises:
        UnpicklableCallable: ``fn`` cannot travel, at any size of the farm.
        TypeError: ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    if isinstance(target, types.MethodType):
        target = target.__func__
    if not isinstance(target, (types.FunctionType, type)):
        target = type(target)
    name = getattr(target, "__qualname__", "")
    if "<lambda>" in name or "<locals>" in name:
        raise UnpicklableCallable(
            f"the function {name} is not picklable, so it cannot be sent to the "
            "workers; define it at module level"
        )


def check_comm(comm, root: int):
    """Return the communicator (default ``COMM_WORLD``) once ``root`` is one
    of its ranks and it is an intracommunicator, as ``MPICommExecutor`` checks.

    Raises:
        ValueError: an intercommunicator, or a root out of range.
    """
    mpilib.check_ready()  # before any MPI call: one line of ours if MPI is not up
    from mpi4py import MPI

    if comm is None:
        comm = MPI.COMM_WORLD
    if not isinstance(comm, MPI.Comm) or comm == MPI.COMM_NULL:
        raise ValueError(f"expected an MPI communicator, not {comm!r}")
    if comm.Is_inter():
        raise ValueError("expected an intracommunicator, not an intercommunicator")
    size = comm.Get_size()
    if not (isinstance(root, numbers.Integral) and 0 <= root < size):
        raise ValueError(f"expected a root rank in [0, {size}), not {root!r}")
    return comm


#: A task as the workers run it: ``(fn, args, kwargs)``.
Call = tuple[Any, tuple[Any, ...], dict[str, Any]]


def apply(task: Call) -> Any:
    """Run one ``(fn, args, kwargs)`` task: the function every worker serves."""
    fn, args, kwargs = task
    return fn(*args, **kwargs)


class Callbacks:
    """Runs futures' done-callbacks on a thread of their own, so that one that
    blocks (waits on another future) cannot stop the thread that makes the
    MPI calls; callbacks of futures done elsewhere run where they are done."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Future | None] = queue.SimpleQueue()
        self.owner: threading.Thread | None = None
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def run(self, future: Future) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._serve, name="ringmpi-executor-callbacks", daemon=True
                )
                self.thread.start()
        self.queue.put(future)

    def _serve(self) -> None:
        while (future := self.queue.get()) is not None:
            Future._invoke_callbacks(future)  # type: ignore[attr-defined]
            del future  # nor its result, while the next is awaited

    def close(self) -> None:
        """Run the callbacks queued so far, then stop (not from a callback)."""
        with self.lock:
            thread, self.thread = self.thread, None
        if thread is not None:
            self.queue.put(None)
            if thread is not threading.current_thread():
                thread.join()


class TaskFuture(Future):
    """A task's future; its callbacks never run on the root's MPI thread."""

    def __init__(self, callbacks: Callbacks):
        super().__init__()
        self._callbacks = callbacks

    def _invoke_callbacks(self) -> None:
        if threading.current_thread() is self._callbacks.owner:
            self._callbacks.run(self)
        else:
            super()._invoke_callbacks()  # type: ignore[misc]


def _notify_cancelled(future: Future) -> None:
    """Tell ``wait()`` and ``as_completed()`` that ``future`` was cancelled.

    They only see a cancelled future once its executor says so (its
    ``set_running_or_notify_cancel()``): here, as soon as it is cancelled,
    since it will never run. Under the future's lock, so that it is said once.
    """
    with future._condition:
        if future._state == concurrent.futures._base.CANCELLED:
            future.set_running_or_notify_cancel()


def task_exception(error: TaskError) -> BaseException:
    """The exception a failed task's future raises: the original one when it
    travelled (its ``__cause__`` holds the remote traceback), else the
    ``TaskError``."""
    return error.exception if error.exception is not None else error


class Futures(Hooks):
    """The executor's tasks for the engine: queued by the caller's thread,
    moved in by the root's thread, each with its future.

    The engine's source (``fill``, ``exhausted``) and hooks: a future is
    running once its task has started on a worker, and a cancelled one is
    dropped, or taken back from the worker that holds it.
    """

    merge = True

    def __init__(self, wake: Callable[[], None]):
        self.wake = wake
        self.callbacks = Callbacks()
        #: called with the error of a task whose rank's initializer failed
        self.on_broken: Callable[[TaskError], None] | None = None
        #: the exception a failed task's future raises (a pool has its own)
        self.exception_of: Callable[[TaskError], BaseException] = task_exception
        #: index -> task and future, from ``fill`` until the outcome (root's thread)
        self.tasks: dict[int, Call] = {}
        self.futures: dict[int, Future] = {}
        self.lock = threading.Lock()
        self.queue: list[tuple[int, Call, Future]] = []
        self.cancelled: list[int] = []
        self.count = itertools.count()
        self.closed = False
        self.cancel_all = False
        self.exhausted = False

    # -- the caller's thread ------------------------------------------------------

    def add(self, calls: Iterable[Call]) -> list[Future]:
        calls = list(calls)  # the caller's iterator is read outside the lock
        futures = []
        with self.lock:
            for call in calls:
                future: Future = TaskFuture(self.callbacks)
                index = next(self.count)
                future.add_done_callback(functools.partial(self._done, index))
                self.queue.append((index, call, future))
                futures.append(future)
        self.wake()
        return futures

    def _done(self, index: int, future: Future) -> None:
        if future.cancelled():
            _notify_cancelled(future)
            with self.lock:
                self.cancelled.append(index)
            self.wake()

    def close(self, cancel: bool) -> None:
        with self.lock:
            self.closed = True
            queued = [future for _, _, future in self.queue] if cancel else []
            held = list(self.futures.values()) if cancel else []
            self.cancel_all = self.cancel_all or cancel
        for future in queued + held:
            future.cancel()
        self.wake()

    # -- the root's thread ---------------------------------------------------------

    def fill(self, engine: Engine) -> None:
        with self.lock:
            items, self.queue = self.queue, []
            cancelled, self.cancelled = self.cancelled, []
            cancel_all, self.cancel_all = self.cancel_all, False
            self.exhausted = self.closed and not items
            for index, call, future in items:  # where close() finds them
                if not future.cancelled():
                    self.tasks[index] = call
                    self.futures[index] = future
                    engine.ready.append([index])
        if cancel_all:
            engine.take_back()
        elif cancelled:
            engine.take_back(cancelled)

    def started(self, index: int) -> None:
        future = self.futures.get(index)
        if future is not None and not future.running() and not future.done():
            future.set_running_or_notify_cancel()

    def forget(self, index: int) -> None:
        """Its outcome sets its future (see :meth:`resolve`)."""

    def dropped(self, index: int) -> bool:
        future = self.futures.get(index)
        if future is None or future.cancelled():
            with self.lock:
                self.futures.pop(index, None)
                self.tasks.pop(index, None)
            return True
        return False

    def resolve(self, outcomes: list[Outcome]) -> None:
        """Set each outcome's future: its value, or the task's exception."""
        retried = getattr(outcomes, "retried", ())
        for index, value, error in outcomes:
            if index in retried:
                continue
            with self.lock:
                future = self.futures.pop(index, None)
                self.tasks.pop(index, None)
            if future is None or future.done():
                continue
            if not future.running() and not future.set_running_or_notify_cancel():
                continue
            if error is None:
                future.set_result(value)
            elif isinstance(error.exception, InitializerError) and self.on_broken is not None:
                self.on_broken(error)
                future.set_exception(self.broken_by(error))
            else:
                future.set_exception(self.exception_of(error))

    @staticmethod
    def broken_by(error: TaskError) -> BaseException:
        first = str(error.exception).splitlines()[0]
        broken = FarmBroken(f"{first} on rank {error.rank}@{error.host}")
        broken.__cause__ = error.exception
        return broken

    def fail_all(self, exc: BaseException) -> None:
        """Fail every future not yet resolved with ``exc``."""
        with self.lock:
            self.closed = self.exhausted = True
            queued = [future for _, _, future in self.queue]
            self.queue = []
            futures = queued + list(self.futures.values())
            self.futures.clear()
            self.tasks.clear()
        for future in futures:
            if not future.done() and (future.running() or future.set_running_or_notify_cancel()):
                future.set_exception(exc)


class Service:
    """The root's side of an executor or pool: queue tasks, drive the farm.

    Created on the root by :func:`start`; see there for the arguments.
    """

    def __init__(
        self, comm, root: int, layout, options: dict[str, Any], attached: contextlib.ExitStack
    ):
        from mpi4py import MPI

        self.comm = comm
        #: the shared data's window, freed once the workers are released
        self._attached = attached
        self.memory_limit = options["memory_limit"]
        self.root = root
        self.ft = options["ft"]
        self.host = socket.gethostname()
        active, idle, root_computes = self._plan(layout, options)
        #: How many ranks compute tasks (the root included when it does).
        self.workers = len(active) + int(root_computes)
        limited = _memory.wrap(apply, self.memory_limit)
        setup: Setup = (limited, options["initializer"], tuple(options["initargs"]))
        self._woken = threading.Event()
        self._backoff = poll.Backoff(sleep=self._nap, growth=GROWTH)
        self.futures = Futures(self._woken.set)
        self.engine = Engine(
            comm, root, self.host, setup, self.stats, self.futures,
            computing=self.workers, ft=self.ft, stop_on_error=False,
            task_timeout=options["task_timeout"], hooks=self.futures,
            backoff=self._backoff, wake=self._woken.set,
        )  # fmt: skip
        self.shut = False
        self.broken: BaseException | None = None
        #: why no more tasks are taken, though leaving raises nothing (an
        #: initializer failed)
        self.refused: BaseException | None = None
        #: the workers could not be released (a task ran past its time): the
        #: job is aborted when the root exits
        self.stuck = False
        #: leaving the program without shutdown: wait for every pending task
        #: (as concurrent.futures), or, for a pool, cancel what has not started
        self.exit_cancels = False
        self.futures.on_broken = self._initializer_failed
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
        self._begin = time.perf_counter()
        self.futures.callbacks.owner = self._thread
        self._thread.start()
        _at_exit(weakref.ref(self))

    def _nap(self, seconds: float) -> None:
        if self._woken.wait(seconds):
            self._woken.clear()
            self._backoff.reset()

    def _plan(self, layout, options: dict[str, Any]) -> tuple[list[int], list[int], bool]:
        """Decide which ranks compute; set ``stats``; return ``(active, idle, root_computes)``."""
        hosts, active, idle, root_computes = plan_ranks(
            layout, options["cores"], self.root, self.memory_limit
        )
        self.stats = FarmStats(idle_ranks=idle, root_computes=root_computes, hosts=hosts)
        self.stats.workers = [WorkerStats(r, hosts[r]) for r in active]
        if root_computes:
            self.stats.workers.insert(0, WorkerStats(self.root, self.host))
        return active, idle, root_computes

    def _run(self, active: Sequence[int], idle: Sequence[int], root_computes: bool) -> None:
        """The root's thread: every MPI call of the executor is made here."""
        from mpi4py import MPI

        engine = self.engine
        try:
            engine.start(active, idle, root_computes)
            self._serve()
        except BaseException as exc:
            if isinstance(exc, MPI.Exception):
                log.error("the executor's root thread failed: %s", exc)
            self.broken = exc
            self.shut = True
            if isinstance(exc, (FarmTimeout, FarmBroken)):
                self.futures.fail_all(exc)
            else:
                broken = FarmBroken(f"the executor stopped: {type(exc).__name__}: {exc}")
                broken.__cause__ = exc
                self.futures.fail_all(broken)
            self._release(exc)
        finally:
            self.stats.elapsed = time.perf_counter() - self._begin
            self.done.set()

    def _serve(self) -> None:
        engine = self.engine
        for outcomes in engine.outcomes():
            self.futures.resolve(outcomes)
            del outcomes  # not held while the next are awaited
            self.stats.elapsed = time.perf_counter() - self._begin
        engine.drain()
        self._attached.close()
        leave(self.comm, self.ft, failed=bool(self.stats.lost))
        if not self.stats.lost:
            self.comm.Free()

    def _release(self, exc: BaseException) -> None:
        """After a failure, let the workers go if they can be; else the job
        ends when the root exits."""
        from mpi4py import MPI

        if not isinstance(exc, (FarmTimeout, MPI.Exception)):
            try:
                self.engine.fail()
                self._serve()
                return
            except BaseException as again:
                log.debug("the workers could not be released: %s", again)
        self.stuck = True

    def _initializer_failed(self, error: TaskError) -> None:
        """An initializer failed: the executor is broken, as in
        ``concurrent.futures``; the workers are let go once what runs is in."""
        if self.refused is None:
            self.refused = self.futures.broken_by(error)
            self.shut = True
            self.engine.fail()
            self.futures.fail_all(self.refused)

    def submit_many(self, calls: Iterable[Call]) -> list[Future]:
        """Queue ``(fn, args, kwargs)`` tasks; return their futures in order."""
        if self.broken is not None:
            raise FarmBroken(f"the executor stopped: {self.broken}") from self.broken
        if self.refused is not None:
            raise FarmBroken(str(self.refused)) from self.refused.__cause__
        if self.shut:
            raise RuntimeError("cannot schedule new futures after shutdown")
        return self.futures.add(calls)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Take no more tasks; release the workers once every task is done
        (``cancel_futures``: once the running ones are, the rest cancelled)."""
        self.shut = True
        self.futures.close(cancel_futures)
        if wait:
            self.join()

    def join(self) -> None:
        """Wait until the root's thread has released the workers and the
        callbacks of the tasks have run."""
        while self._thread.is_alive():
            self._thread.join(0.5)
        self.futures.callbacks.close()

    def exit(self) -> None:
        """The program ends: finish (or, for a pool, cancel) what is pending
        and release the workers; abort the job if they cannot be released."""
        if not self.done.is_set():
            self.shutdown(wait=True, cancel_futures=self.exit_cancels)
        if self.stuck:
            _stop.abort_job(_stop.STUCK.format(self.broken))


def _at_exit(service: weakref.ref[Service]) -> None:
    """Have ``service`` end with the program (weakly: it may go before)."""

    def hook() -> None:
        alive = service()
        if alive is not None:
            alive.exit()

    try:  # before the interpreter stops its threads, as concurrent.futures does
        threading._register_atexit(hook)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        atexit.register(hook)


def check_initializer(initializer: Any) -> None:
    """Refuse an ``initializer`` that cannot be called, as ``concurrent.futures`` does.

    Raises:
        TypeError: It is not callable.
    """
    if initializer is not None and not callable(initializer):
        raise TypeError(f"initializer must be a callable, not {type(initializer).__name__}")


def check_options(task_timeout: float | None, memory_limit: int | str | None) -> int | None:
    """Check what :func:`start` would refuse; return the memory limit in bytes.

    Raises:
        ValueError: A bad option.
    """
    if task_timeout is not None and not task_timeout > 0:
        raise ValueError(f"task_timeout must be positive, not {task_timeout}")
    return _memory.check_limit(memory_limit)


def set_hosted(on: bool) -> None:
    """Say that a script under ``python -m ringmpi.run`` runs on this rank, the
    root: farms over ``COMM_WORLD`` are then refused at once."""
    _starting.hosted[0] = on


def start(
    comm,
    root: int,
    *,
    cores: int | None = None,
    task_timeout: float | None = None,
    fault_tolerant: bool = False,
    initializer: Callable[..., Any] | None = None,
    initargs: Sequence[Any] = (),
    memory_limit: int | str | None = None,
    shared: Any = None,
):
    """Start the farm behind an executor or a pool; collective over ``comm``.

    ``memory_limit`` and ``shared`` are as for :class:`ringmpi.farm.Farm`
    (``shared`` is read on the root only).

    Returns:
        ``(service, None)`` on the root, ``(None, serve)`` elsewhere, where
        ``serve()`` serves tasks until the root shuts down.

    Raises:
        ValueError: A bad option.
        FarmUsageError: On every rank alike, when the root finds the shared
            data unusable or the memory limit too low for the workers.
    """
    from mpi4py import MPI

    mpilib.check_ready()
    limit = check_options(task_timeout, memory_limit)
    if comm is None:
        comm = MPI.COMM_WORLD
    check_not_in_task(comm)
    ft = fault_tolerant and config.ulfm_enabled()
    if fault_tolerant and not ft and comm.Get_rank() == root:
        log.warning(
            "fault tolerance is not active (%s): a lost worker will end the job",
            mpilib.fault_tolerance_hint(),
        )
    private = _join(comm, root, ft)
    is_root = private.Get_rank() == root
    attached = contextlib.ExitStack()
    try:
        layout = private.gather(rank_facts(private), root=root)
        problem = plan = None
        if is_root:
            problem = _memory.room_problem(limit, computing(layout, root))
            if shared is not None:
                plan = _shared.Plan(shared)
                problem = problem or plan.problem()
        # Told to every rank, which raises it alike.
        _starting.start(private, root, problem)
        attached.enter_context(_shared.attach(private, root, plan))
    except BaseException:
        attached.close()
        private.Free()
        raise
    if not is_root:

        def serve() -> None:
            running = leftovers.snapshot()
            with attached:
                serve_dynamic(private, root)
            # Ranks that are done wait longer between polls: nothing is urgent.
            leave(private, ft, False, poll.Backoff(cap=max(config.poll_max_sleep(), 5e-3)))
            where = f"{private.Get_rank()}@{socket.gethostname()}"
            private.Free()
            left = leftovers.warning(running, where)
            if left is not None:
                log.warning("%s", left)

        return None, serve
    options = {
        "cores": cores,
        "task_timeout": task_timeout,
        "ft": ft,
        "initializer": initializer,
        "initargs": initargs,
        "memory_limit": limit,
    }
    return Service(private, root, layout, options, attached), None


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
