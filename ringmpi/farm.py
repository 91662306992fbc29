"""A master/worker task farm for any picklable function.

Every rank of the communicator calls :func:`farm_map` (or :class:`Farm`)
together. The root hands out tasks and gathers the results; the other ranks
serve until told to stop. Results come back in input order.

Message protocol (root ``R``, worker ``W``):

* ``R -> W`` ``Tag.SETUP``: ``(fn, initializer, initargs)``, or ``None`` for a
  worker that is not needed (more ranks than cores or than tasks).
* ``R -> W`` ``Tag.TASK``: a chunk ``[(index, task), ...]``, or ``None``: stop.
* ``W -> R`` ``Tag.RESULT``: ``(outcomes, busy_seconds)`` with one
  ``(index, value, error)`` per task of the chunk.
* Everyone ends in a barrier, so every rank returns when the farm is done.

Waiting never spins (see :mod:`ringmpi.poll`), and the root only hands out as
many tasks at once on a node as the node has cores: on a node with fewer
cores than ranks, the extra ranks stay idle instead of time-slicing the
cores, and the root computes tasks itself when its node has a core to spare.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import pickle
import queue
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import config, harness, poll
from .harness import RingmpiError

log = logging.getLogger(__name__)


class Tag(enum.IntEnum):
    """Message tags of the farm protocol."""

    SETUP = 101
    TASK = 102
    RESULT = 103


class Schedule(str, enum.Enum):
    """How tasks reach the workers."""

    DYNAMIC = "dynamic"
    STATIC = "static"


class TaskError(Exception):
    """A task raised on a worker; carries the remote traceback.

    Attributes:
        index: Position of the task in the input.
        task: ``repr`` of the task.
        rank: The rank that ran it.
        host: The host that rank ran on.
        remote_traceback: The traceback text from the worker.
    """

    def __init__(self, index: int, task: str, rank: int, host: str, summary: str, remote_tb: str):
        super().__init__(index, task, rank, host, summary, remote_tb)
        self.index = index
        self.task = task
        self.rank = rank
        self.host = host
        self.summary = summary
        self.remote_traceback = remote_tb

    def __str__(self) -> str:
        where = f"rank {self.rank}@{self.host}"
        return f"task {self.index} ({self.task}) failed on {where}: {self.summary}"


class FarmError(RingmpiError):
    """A task failed and the farm stopped; raised on the root.

    Attributes:
        errors: The task errors that arrived before the farm stopped.
    """

    def __init__(self, errors: list[TaskError]):
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{first}{more}")
        self.errors = errors


class FarmStartError(RingmpiError):
    """A rank was lost before the farm began; raised on every survivor."""

    collective = True


class FarmTimeout(RingmpiError):
    """A task ran past its time limit; raised on the root.

    The worker running it cannot be interrupted: the caller should end the
    job (``launch`` aborts it).
    """


@dataclass
class WorkerStats:
    """What one rank did in the farm."""

    rank: int
    host: str
    tasks: int = 0
    busy: float = 0.0


@dataclass
class LostWorker:
    """A worker that died during a fault-tolerant run, and what it had."""

    rank: int
    host: str
    requeued: list[int]


@dataclass
class FarmStats:
    """What the farm did, known on the root after the run."""

    elapsed: float = 0.0
    workers: list[WorkerStats] = field(default_factory=list)
    idle_ranks: list[int] = field(default_factory=list)
    root_computes: bool = False
    chunks: int = 0
    errors: list[TaskError] = field(default_factory=list)
    lost: list[LostWorker] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


def _failure_classes() -> tuple[int, ...]:
    from mpi4py import MPI

    return tuple(
        getattr(MPI, name)
        for name in ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING", "ERR_REVOKED")
        if hasattr(MPI, name)
    )


# --- pieces that need no MPI -------------------------------------------------


def call(fn: Callable[[Any], Any], task: Any) -> tuple[Any, BaseException | None]:
    """Run ``fn(task)`` and return ``(result, None)`` or ``(None, exc)``.

    ``sys.exit`` in a task is a failed task too: a worker that left the farm
    would leave the root waiting for its results.
    """
    try:
        return fn(task), None
    except (Exception, SystemExit) as exc:
        return None, exc


def describe_error(
    exc: BaseException, index: int, task: Any, rank: int, host: str, tb: str | None = None
) -> TaskError:
    """Wrap an exception from a task as a picklable ``TaskError``."""
    if tb is None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    summary = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return TaskError(index, _short_repr(task), rank, host, summary, tb)


def _short_repr(obj: Any, limit: int = 80) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def make_chunks(
    n: int,
    workers: int,
    chunksize: int | None = None,
    costs: Sequence[float] | None = None,
) -> list[list[int]]:
    """Split task indices ``0..n-1`` into chunks to hand out.

    With ``costs``, tasks go largest first and chunk sizes shrink as the work
    left shrinks (guided scheduling), so the last chunks are small and the
    workers finish together. Without, chunks hold ``chunksize`` tasks, by
    default ``ceil(n / (4 * workers))`` as ``multiprocessing.Pool.map``.

    Args:
        n: Number of tasks.
        workers: Number of ranks computing.
        chunksize: Tasks per chunk; overrides the cost-guided sizes.
        costs: Relative cost of each task.

    Returns:
        Chunks of task indices, in the order to hand them out.
    """
    workers = max(1, workers)
    order = list(range(n))
    if costs is not None:
        order.sort(key=lambda i: -costs[i])
    if chunksize is None and costs is None:
        chunksize = max(1, math.ceil(n / (4 * workers)))
    if chunksize is not None:
        return [order[i : i + chunksize] for i in range(0, n, chunksize)]
    assert costs is not None
    total = float(sum(costs[i] for i in order))
    floor = total / (64 * workers)
    remaining = total
    chunks: list[list[int]] = []
    chunk: list[int] = []
    chunk_cost = 0.0
    target = max(remaining / (3 * workers), floor)
    for i in order:
        chunk.append(i)
        chunk_cost += costs[i]
        if chunk_cost >= target:
            chunks.append(chunk)
            remaining -= chunk_cost
            chunk, chunk_cost = [], 0.0
            target = max(remaining / (3 * workers), floor)
    if chunk:
        chunks.append(chunk)
    return chunks


def balance(n: int, bins: int, costs: Sequence[float] | None = None) -> list[list[int]]:
    """Split task indices into ``bins`` lists of about equal cost (for static).

    Largest task first into the least loaded bin; without costs, round robin.
    """
    bins = max(1, bins)
    if costs is None:
        return [list(range(b, n, bins)) for b in range(bins)]
    loads = [0.0] * bins
    out: list[list[int]] = [[] for _ in range(bins)]
    for i in sorted(range(n), key=lambda i: -costs[i]):
        b = min(range(bins), key=loads.__getitem__)
        out[b].append(i)
        loads[b] += costs[i]
    return out


def plan_workers(
    hosts: Sequence[str], cores: Sequence[int], root: int
) -> tuple[list[int], list[int], bool]:
    """Choose which ranks compute, given each rank's host and that host's cores.

    On each host at most as many ranks compute as the host has cores. The
    root only hands out tasks and sleeps while it waits, so it takes no core,
    unless its host has a core that no worker uses: then it computes too.

    Args:
        hosts: Host name of each rank.
        cores: Cores of each rank's host.
        root: The root rank.

    Returns:
        ``(active, idle, root_computes)``: worker ranks that compute, worker
        ranks that stay idle, and whether the root computes.
    """
    per_host: dict[str, list[int]] = {}
    for rank, host in enumerate(hosts):
        if rank != root:
            per_host.setdefault(host, []).append(rank)
    active: list[int] = []
    idle: list[int] = []
    for ranks in per_host.values():
        slots = cores[ranks[0]]
        active += ranks[:slots]
        idle += ranks[slots:]
    root_computes = len(per_host.get(hosts[root], [])) < cores[root]
    # Interleave hosts so that the first chunks spread over the nodes.
    active.sort(key=lambda r: (per_host[hosts[r]].index(r), r))
    return active, sorted(idle), root_computes


def _node_cores(comm) -> int:
    """Cores of this rank's node: the union of its ranks' CPU affinities."""
    from mpi4py import MPI

    try:
        mine = set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        mine = set(range(os.cpu_count() or 1))
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        cpus = set().union(*node.allgather(mine))
    finally:
        node.Free()
    return max(1, len(cpus))


# --- the farm -----------------------------------------------------------------


class Farm:
    """A task farm over a communicator; every rank creates it and calls ``map``.

    Args:
        comm: The communicator; any intracommunicator, size 1 included.
        fn: The function applied to each task; must be picklable (it is sent
            to the workers from the root, so other ranks may pass None).
        root: The rank that hands out tasks and gets the results.
        schedule: ``"dynamic"`` (workers pull chunks) or ``"static"``
            (balanced chunks scattered up front, results gathered).
        chunksize: Tasks per chunk (default: guided by ``cost``, else as
            ``multiprocessing.Pool.map``).
        cost: Relative cost of a task, ``cost(task) -> float``; largest first.
        initializer: Called as ``initializer(*initargs)`` on each computing
            rank before its first task.
        initargs: Arguments for ``initializer``.
        errors: ``"raise"`` stops the farm at the first failed task and raises
            ``FarmError`` on the root; ``"collect"`` finishes the other tasks
            and puts a ``TaskError`` in the failed task's place.
        cores: Cores per node (default ``RINGMPI_CORES`` or detected).
        task_timeout: Seconds one task may run before ``FarmTimeout``.
        progress: Called on the root as ``progress(done, total)``.
        fault_tolerant: When the job runs with ULFM (``mpiexec --with-ft
            ulfm``), survive lost workers: their tasks go to the others, and
            ranks with no free core wait as spares. Without ULFM, a lost
            worker ends the job (a warning says so).
    """

    def __init__(
        self,
        comm,
        fn: Callable[[Any], Any] | None,
        *,
        root: int = 0,
        schedule: str = "dynamic",
        chunksize: int | None = None,
        cost: Callable[[Any], float] | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Sequence[Any] = (),
        errors: str = "raise",
        cores: int | None = None,
        task_timeout: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        fault_tolerant: bool = False,
    ):
        if errors not in ("raise", "collect"):
            raise ValueError(f"errors must be 'raise' or 'collect', not {errors!r}")
        if fault_tolerant and Schedule(schedule) is not Schedule.DYNAMIC:
            raise ValueError("fault tolerance needs the dynamic schedule")
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, not {chunksize}")
        self.comm = comm
        self.fn = fn
        self.root = root
        self.schedule = Schedule(schedule)
        self.chunksize = chunksize
        self.cost = cost
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self.errors = errors
        self.cores = cores
        self.task_timeout = task_timeout
        self.progress = progress
        self.fault_tolerant = fault_tolerant
        self.stats = FarmStats()
        self.host = socket.gethostname()

    # -- public ---------------------------------------------------------------

    def map(self, tasks: Iterable[Any] | None) -> list[Any] | None:
        """Apply ``fn`` to every task; collective over ``comm``.

        Args:
            tasks: The tasks, read on the root only (others may pass None).

        Returns:
            On the root, the results in input order; None on other ranks.

        Raises:
            FarmError: On the root, when a task failed and ``errors="raise"``.
            FarmTimeout: On the root, when a task ran past ``task_timeout``.
        """
        results: list[Any] | None = None
        task_list = list(tasks) if self._is_root and tasks is not None else []
        if self._is_root:
            results = [None] * len(task_list)
        for index, value in self._run(task_list):
            assert results is not None
            results[index] = value
        return results

    def imap_unordered(self, tasks: Iterable[Any] | None) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, result)`` on the root as tasks complete; collective.

        Other ranks serve tasks and yield nothing.
        """
        task_list = list(tasks) if self._is_root and tasks is not None else []
        yield from self._run(task_list)

    # -- common ---------------------------------------------------------------

    @property
    def _is_root(self) -> bool:
        return self.comm.Get_rank() == self.root

    def _run(self, tasks: list[Any]) -> Iterator[tuple[int, Any]]:
        from mpi4py import MPI

        start = time.perf_counter()
        # A private communicator keeps the farm's messages apart from the
        # caller's, and lets fault tolerance change only its error handler.
        user_comm = self.comm
        comm = self.comm = user_comm.Dup()
        ft = self.fault_tolerant and config.ulfm_enabled()
        if ft:
            comm.Set_errhandler(MPI.ERRORS_RETURN)
        try:
            yield from self._run_on(comm, tasks, start, ft)
        finally:
            self.comm = user_comm
            if not self.stats.lost:
                comm.Free()

    def _run_on(self, comm, tasks, start, ft) -> Iterator[tuple[int, Any]]:
        from mpi4py import MPI

        try:
            layout = comm.gather((self.host, _node_cores(comm)), root=self.root)
        except MPI.Exception as exc:
            if not ft:
                raise
            # Tolerance starts once every rank is known to be in the farm.
            harness.mark_degraded()
            raise FarmStartError(
                f"a rank was lost while the farm started ({exc.Get_error_string()}); "
                "fault tolerance covers losses after start-up"
            ) from None
        if not self._is_root:
            if self.schedule is Schedule.STATIC:
                self._static_worker()
            else:
                self._worker()
            # Ranks that are done wait longer between polls: nothing is urgent.
            self._final_barrier(comm, ft, poll.Backoff(cap=max(config.poll_max_sleep(), 5e-3)))
            self._agree_on_failures(comm, ft, failed=False)
            return
        assert layout is not None
        hosts = [h for h, _ in layout]
        try:
            override = self.cores or config.cores()
        except ValueError as exc:
            raise RingmpiError(str(exc)) from None
        cores = [override or c for _, c in layout]
        active, idle, root_computes = plan_workers(hosts, cores, self.root)
        if not active:
            root_computes = True
        if self.fault_tolerant and not ft:
            log.warning(
                "fault tolerance is not active (launch with 'mpiexec --with-ft ulfm'): "
                "a lost worker will end the job"
            )
        costs = [float(self.cost(t)) for t in tasks] if self.cost else None
        self.stats = FarmStats(idle_ranks=idle, root_computes=root_computes, hosts=hosts)
        self.stats.workers = [WorkerStats(r, hosts[r]) for r in active]
        if root_computes:
            self.stats.workers.insert(0, WorkerStats(self.root, self.host))
        try:
            if self.schedule is Schedule.STATIC:
                yield from self._static_root(tasks, costs, active, idle, root_computes)
            else:
                yield from self._dynamic_root(tasks, costs, active, idle, root_computes, ft)
        finally:
            self.stats.elapsed = time.perf_counter() - start
        self._final_barrier(comm, ft)
        self._agree_on_failures(comm, ft, failed=bool(self.stats.lost))
        if self.stats.errors and self.errors == "raise":
            raise FarmError(self.stats.errors)

    @staticmethod
    def _agree_on_failures(comm, ft: bool, failed: bool) -> None:
        """Let every survivor learn whether a rank was lost (ULFM agreement).

        After a loss, ``MPI_Finalize`` can hang (open-mpi/ompi#11404), so the
        harness then leaves without it.
        """
        if not ft:
            return
        from mpi4py import MPI

        try:
            failed = not comm.Agree(0 if failed else 1)
        except MPI.Exception:
            failed = True
        if failed:
            harness.mark_degraded()

    @staticmethod
    def _final_barrier(comm, ft: bool, backoff: poll.Backoff | None = None) -> None:
        # Fault tolerant, the root holds every live worker until the end and
        # then releases it, so no barrier (which a lost rank would fail) is
        # needed.
        if not ft:
            poll.barrier(comm, backoff)

    def _emit(self, outcomes) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, value)`` per outcome; record errors, and yield them
        in place of the value when they are collected."""
        for index, value, error in outcomes:
            if error is None:
                yield index, value
                continue
            self.stats.errors.append(error)
            if self.errors == "collect":
                yield index, error

    def _run_chunk(self, fn, chunk, rank):
        """Run a chunk; return ``(outcomes, busy)`` with errors made picklable."""
        outcomes = []
        begin = time.perf_counter()
        for index, task in chunk:
            value, exc = call(fn, task)
            if exc is not None:
                outcomes.append((index, None, describe_error(exc, index, task, rank, self.host)))
            else:
                outcomes.append((index, value, None))
        return outcomes, time.perf_counter() - begin

    def _setup(self):
        """Return the function to apply, after running the initializer."""
        if self.initializer is None:
            return self.fn
        try:
            self.initializer(*self.initargs)
        except Exception as exc:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

            def failed(_task, exc=exc, tb=tb):
                raise RuntimeError(f"the initializer failed: {type(exc).__name__}: {exc}\n{tb}")

            return failed
        return self.fn

    # -- dynamic --------------------------------------------------------------

    def _worker(self) -> None:
        comm, root = self.comm, self.root
        rank = comm.Get_rank()
        backoff = poll.Backoff()
        setup = poll.recv(comm, root, Tag.SETUP, backoff=backoff)
        if setup is None:
            return
        self.fn, self.initializer, self.initargs = setup
        fn = self._setup()
        while True:
            chunk = poll.recv(comm, root, Tag.TASK, backoff=backoff)
            if chunk is None:
                break
            outcomes, busy = self._run_chunk(fn, chunk, rank)
            try:
                comm.send((outcomes, busy), dest=root, tag=Tag.RESULT)
            except (pickle.PicklingError, TypeError, AttributeError):
                # Nothing was sent: mpi4py pickles before sending.
                outcomes = [self._unpicklable(o, rank) for o in outcomes]
                comm.send((outcomes, busy), dest=root, tag=Tag.RESULT)
            backoff.reset()

    def _unpicklable(self, outcome, rank):
        index, value, error = outcome
        try:
            pickle.dumps((value, error), -1)
            return outcome
        except Exception as exc:
            what = "result" if error is None else "error"
            err = TaskError(
                index,
                "?",
                rank,
                self.host,
                f"the {what} could not be pickled: {type(exc).__name__}: {exc}",
                "",
            )
            return (index, None, err)

    def _dynamic_root(self, tasks, costs, active, idle, root_computes, ft):
        comm = self.comm
        from mpi4py import MPI

        n = len(tasks)
        computing = len(active) + (1 if root_computes else 0)
        chunks = deque(make_chunks(n, computing, self.chunksize, costs))
        self.stats.chunks = len(chunks)
        setup = (self.fn, self.initializer, self.initargs)
        # Without fault tolerance, ranks with no free core are released now;
        # with it, they wait as spares to replace a worker that is lost.
        spares = list(idle) if ft else []
        requests = [comm.isend(None, dest=r, tag=Tag.SETUP) for r in idle if r not in spares]
        requests += [comm.isend(setup, dest=r, tag=Tag.SETUP) for r in spares]
        lock = threading.Lock()

        def stopping() -> bool:
            return bool(self.stats.errors) and self.errors == "raise"

        def take() -> list[int] | None:
            with lock:
                return chunks.popleft() if chunks and not stopping() else None

        def payload(indices: list[int]) -> list[tuple[int, Any]]:
            return [(i, tasks[i]) for i in indices]

        stats = {w.rank: w for w in self.stats.workers}
        busy: dict[int, tuple[list[int], float]] = {}
        parked: list[int] = []  # fault tolerant: live workers with nothing to do yet

        def dispatch(rank: int) -> None:
            indices = take()
            if indices is not None:
                busy[rank] = (indices, time.perf_counter())
                requests.append(comm.isend(payload(indices), rank, Tag.TASK))
            elif ft:
                parked.append(rank)
            else:
                requests.append(comm.isend(None, rank, Tag.TASK))

        for rank in active:
            requests.append(comm.isend(setup, dest=rank, tag=Tag.SETUP))
            dispatch(rank)

        local: queue.SimpleQueue = queue.SimpleQueue()
        helper = None
        if root_computes:
            helper = threading.Thread(
                target=self._root_worker, args=(take, payload, local), daemon=True
            )
            helper.start()

        done = 0
        status = MPI.Status()
        backoff = poll.Backoff()

        def helping() -> bool:
            return helper is not None and helper.is_alive()

        while busy or helping() or not local.empty() or (chunks and not stopping()):
            if chunks and not stopping() and not (busy or parked or spares or helping()):
                # Every worker is lost: the root finishes the work itself.
                indices = chunks.popleft()
                local.put(self._run_chunk(self._setup(), payload(indices), self.root))
                self._enlist(stats, self.root)
            arrived = []
            try:
                message = comm.improbe(MPI.ANY_SOURCE, Tag.RESULT, status)
                if message is None and backoff.pause():
                    message = comm.improbe(MPI.ANY_SOURCE, Tag.RESULT, status)
                if message is not None:
                    rank = status.Get_source()
                    outcomes, seconds = message.recv()
                    busy.pop(rank)
                    dispatch(rank)
                    stats[rank].tasks += len(outcomes)
                    stats[rank].busy += seconds
                    arrived.append(outcomes)
            except MPI.Exception as exc:
                if not ft or exc.Get_error_class() not in _failure_classes():
                    raise
                self._recover(comm, busy, chunks, parked, spares, stats, dispatch)
                continue
            while not local.empty():
                outcomes, seconds = local.get()
                stats[self.root].tasks += len(outcomes)
                stats[self.root].busy += seconds
                arrived.append(outcomes)
            if not arrived:
                self._check_deadlines(busy, tasks, stats)
                continue
            backoff.reset()
            for outcomes in arrived:
                yield from self._emit(outcomes)
                done += len(outcomes)
                if self.progress is not None:
                    self.progress(done, n)
        if helper is not None:
            helper.join()
        for rank in parked + spares:
            requests.append(comm.isend(None, rank, Tag.TASK))
        for request in requests:
            try:
                poll.wait(request, backoff)
            except MPI.Exception:
                if not ft:
                    raise  # a send to a lost worker cannot complete

    def _recover(self, comm, busy, chunks, parked, spares, stats, dispatch) -> None:
        """Requeue the work of lost workers and bring in spares (ULFM)."""
        comm.Ack_failed()
        group = comm.Get_failed()
        try:
            failed = group.Translate_ranks(list(range(group.Get_size())), comm.Get_group())
        finally:
            group.Free()
        known = {lost.rank for lost in self.stats.lost}
        for rank in failed:
            if rank in known:
                continue
            indices = busy.pop(rank, ([], 0.0))[0]
            chunks.extendleft(reversed([indices] if indices else []))
            for pool in (parked, spares):
                if rank in pool:
                    pool.remove(rank)
            host = self.stats.hosts[rank] if self.stats.hosts else "?"
            self.stats.lost.append(LostWorker(rank, host, list(indices)))
            log.warning("lost worker rank %d@%s; requeued tasks %s", rank, host, indices)
        while chunks and (parked or spares):
            rank = parked.pop(0) if parked else spares.pop(0)
            self._enlist(stats, rank)
            dispatch(rank)

    def _enlist(self, stats: dict[int, WorkerStats], rank: int) -> None:
        """Count ``rank`` among the computing ranks from now on."""
        if rank not in stats:
            stats[rank] = WorkerStats(rank, self.stats.hosts[rank])
            self.stats.workers.append(stats[rank])

    def _root_worker(self, take, payload, local) -> None:
        fn = self._setup()
        while True:
            indices = take()
            if indices is None:
                return
            local.put(self._run_chunk(fn, payload(indices), self.root))

    def _check_deadlines(self, busy, tasks, stats) -> None:
        if self.task_timeout is None:
            return
        now = time.perf_counter()
        for rank, (indices, since) in busy.items():
            if now - since > self.task_timeout * len(indices):
                shown = ", ".join(f"{i} ({_short_repr(tasks[i], 40)})" for i in indices[:3])
                raise FarmTimeout(
                    f"rank {rank}@{stats[rank].host} has run task(s) {shown} for "
                    f"{now - since:.1f} s, past the limit of {self.task_timeout:g} s per task"
                )

    # -- static ---------------------------------------------------------------

    def _static_worker(self) -> None:
        comm = self.comm
        mine = comm.scatter(None, root=self.root)
        outcomes, busy = [], 0.0
        if mine is not None:
            self.fn, self.initializer, self.initargs, chunk = mine
            outcomes, busy = self._run_chunk(self._setup(), chunk, comm.Get_rank())
        # Wait without spinning for the slowest rank, then gather at once.
        poll.barrier(comm)
        comm.gather((outcomes, busy), root=self.root)

    def _static_root(self, tasks, costs, active, idle, root_computes):
        comm = self.comm
        n = len(tasks)
        computing = ([self.root] if root_computes else []) + active
        bins = balance(n, len(computing), costs)
        self.stats.chunks = len(bins)
        setup = (self.fn, self.initializer, self.initargs)
        sendobj: list[Any] = [None] * comm.Get_size()
        for rank, indices in zip(computing, bins):
            sendobj[rank] = (*setup, [(i, tasks[i]) for i in indices])
        mine = comm.scatter(sendobj, root=self.root)
        outcomes, busy = [], 0.0
        if mine is not None:
            outcomes, busy = self._run_chunk(self._setup(), mine[3], self.root)
        poll.barrier(comm)
        gathered = comm.gather((outcomes, busy), root=self.root)
        stats = {w.rank: w for w in self.stats.workers}
        done = 0
        for rank, (outcomes, seconds) in enumerate(gathered):
            if rank in stats:
                stats[rank].tasks += len(outcomes)
                stats[rank].busy += seconds
            yield from self._emit(outcomes)
            done += len(outcomes)
        if self.progress is not None:
            self.progress(done, n)


def farm_map(comm, fn: Callable[[Any], Any] | None, tasks: Iterable[Any] | None, **options):
    """Apply ``fn`` to each task over ``comm``; collective. See :class:`Farm`.

    Returns:
        On the root, the results in input order; None on other ranks.
    """
    return Farm(comm, fn, **options).map(tasks)


def farm_imap_unordered(comm, fn, tasks, **options) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, result)`` on the root as tasks complete; collective."""
    return Farm(comm, fn, **options).imap_unordered(tasks)
