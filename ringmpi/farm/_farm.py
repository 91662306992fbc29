"""The farm itself: options, the private communicator, choosing a role, and serving."""

from __future__ import annotations

import contextlib
import socket
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .. import config, poll
from ..errors import mark_degraded
from ..journal import JournalError
from . import _shared, _stop
from ._farm_root import RootRun
from ._ft import leave
from ._options import check_or_defer
from ._outcome import FarmStartError, FarmStats, Schedule, Tag
from ._plan import node_cores
from ._start import Unusable, check_setup, join_telling, start
from ._stop import Stop
from ._trace import clock_offsets
from ._worker import serve_dynamic, serve_static

#: On the root: the farm_imap_unordered run last started on each
#: communicator (by handle), until it is closed or dropped.
_unfinished: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


class Farm(RootRun):
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
        join_timeout: Seconds every rank may take to call the farm (default
            ``RINGMPI_JOIN_TIMEOUT`` or 300; 0: for ever); past it, the root
            names the ranks that never came and every rank raises.
        trace: Record one ``TaskSpan`` per task in ``stats.trace``: rank,
            host, start and end on the root's clock, chunk, and when the root
            sent the chunk and had it back (see :mod:`ringmpi.trace`).
        journal: Path of a journal (SQLite) that records every outcome on
            the root as it arrives (see :mod:`ringmpi.journal`). Every rank
            passes the same ``journal``, ``resume`` and ``grace``.
        resume: Continue the run the journal holds: tasks with a result there
            are not run again and come back as if computed; tasks that failed
            run again, except with ``errors="collect"``, where their error
            stays. ``"failed"`` reruns the failed tasks in both modes. With no
            journal at the path, the run starts afresh.
        force_resume: Resume even a journal of another function or task list.
        retries: Run a task that raised again, up to this many times (dynamic
            schedule); every attempt is journaled, the last error is kept.
        grace: Handle SIGTERM, SIGINT and SIGUSR1 while the farm runs: stop
            handing out work, wait up to ``grace`` seconds for the chunks in
            flight, and raise ``FarmStopped`` (exit status 128 + signal) on
            every rank. None (default) leaves the signals alone.
        shared: Read-only data for every task, read on the root only (see
            :mod:`._shared`): sent once per node, its numpy arrays (in dicts,
            lists and tuples) in one shared-memory copy per node. Tasks get
            it with ``ringmpi.farm.shared()``, the arrays as read-only views
            valid while the farm runs.

    Raises:
        FarmUsageError: A bad option (a ``ValueError``); raised alike on
            every rank, as it is when the root finds its tasks or function
            unusable.
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
        join_timeout: float | None = None,
        trace: bool = False,
        journal: str | None = None,
        resume: bool | str = False,
        force_resume: bool = False,
        retries: int = 0,
        grace: float | None = None,
        shared: Any = None,
        **unknown: Any,
    ):
        #: A bad option: raised on every rank once the farm has started.
        self._problem: str | None
        self.errors, self.schedule, self._problem = check_or_defer(
            comm, unknown, Farm.__init__, errors=errors, schedule=schedule, root=root,
            fault_tolerant=fault_tolerant, task_timeout=task_timeout, chunksize=chunksize,
            retries=retries, resume=resume, grace=grace, cores=cores,
        )  # fmt: skip
        if join_timeout is None:
            join_timeout = config.join_timeout()
        self.join_timeout = join_timeout or None
        self.journal_path = None if journal is None else str(journal)
        self.resume = resume
        self.force_resume = force_resume
        self.retries = retries
        self.grace = grace
        #: During a run on the root: the indices of the tasks it computes (the
        #: journal, the counts of outcomes and the stop: see Resumable).
        self._todo: list[int] = []
        self.comm = comm
        self.fn = fn
        self.root = root
        self.chunksize = chunksize
        self.cost = cost
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self.cores = cores
        self.task_timeout = task_timeout
        self.progress = progress
        self.trace = bool(trace)
        self.shared = shared
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
        task_list = self._task_list(tasks)
        results: list[Any] = [None] * (len(task_list) if isinstance(task_list, list) else 0)
        for index, value in self._run(task_list):
            results[index] = value
        return results if self._is_root else None

    def imap_unordered(self, tasks: Iterable[Any] | None) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, result)`` on the root as tasks complete; collective.

        Other ranks serve tasks and yield nothing. Stop reading early, and the
        rest is cancelled when the iterator is closed or dropped, or at the
        latest when the next farm starts on the same communicator.
        """
        run = self._run(self._task_list(tasks))
        if self._is_root:
            _unfinished[self.comm.py2f()] = run
        return run

    # -- one run --------------------------------------------------------------

    @property
    def _is_root(self) -> bool:
        return self.comm.Get_rank() == self.root

    def _task_list(self, tasks: Iterable[Any] | None) -> list[Any] | Unusable | None:
        if not self._is_root or tasks is None:
            return None
        # A farm left half-read on this communicator holds the workers:
        # finish it (cancel what it has not handed out) before this one.
        earlier = _unfinished.pop(self.comm.py2f(), None)
        if earlier is not None:
            earlier.close()
        try:
            return list(tasks)
        except TypeError:
            return Unusable(f"the tasks must be iterable, not {type(tasks).__name__}")

    def _run(self, tasks: list[Any] | Unusable | None) -> Iterator[tuple[int, Any]]:
        from mpi4py import MPI

        begin = time.perf_counter()
        # A private communicator keeps the farm's messages apart from the
        # caller's, and lets fault tolerance change only its error handler.
        comm, told = join_telling(self.comm, self.root, self.join_timeout, self._problem)
        ft = self.fault_tolerant and config.ulfm_enabled()
        if ft:
            comm.Set_errhandler(MPI.ERRORS_RETURN)
        self._stop = None if self.grace is None else Stop(self.grace)
        finished = False
        try:
            layout = self._gather_layout(comm, ft)
            problem = plan = None
            if self._is_root:
                setup = (self.fn, self.initializer, self.initargs)
                problem = self._problem or told or check_setup(self.fn, setup, tasks)
                if self.shared is not None:
                    plan = _shared.Plan(self.shared)
                    problem = problem or plan.problem()
            trace = start(comm, self.root, problem, self.trace)
            assert not isinstance(tasks, Unusable)  # start() raised
            offsets = clock_offsets(comm, self.root) if trace else None
            kept = self._open_journal(comm, tasks or [])
            stopping = self._stop.installed() if self._stop else _nothing()
            with _shared.attach(comm, self.root, plan), stopping:
                if self._is_root:
                    assert tasks is not None
                    yield from kept
                    work = [tasks[i] for i in self._todo]
                    try:
                        for index, value in self._root(comm, work, layout, ft, begin, offsets):
                            yield self._todo[index], value
                    except GeneratorExit:
                        if self._stop is not None:  # the workers wait to agree on a stop
                            _stop.agree(comm, 0, ft)
                        raise
                    self._agree_on_stop(comm, ft, len(tasks))
                else:
                    self._serve(comm, ft)
                    self._agree_on_stop(comm, ft, 0)
            finished = True
        finally:
            journal, self._journal = self._journal, None
            if journal is not None:
                # After an error, that error says what went wrong.
                with contextlib.suppress(*(() if finished else (JournalError,))):
                    journal.close()
            if not self.stats.lost:
                comm.Free()

    def _gather_layout(self, comm, ft: bool) -> list[tuple[str, int]] | None:
        """Gather each rank's host and node cores on the root."""
        from mpi4py import MPI

        try:
            return comm.gather((self.host, node_cores(comm)), root=self.root)
        except MPI.Exception as exc:
            if not ft:
                raise
            # Tolerance starts once every rank is known to be in the farm.
            mark_degraded()
            raise FarmStartError(
                f"a rank was lost while the farm started ({exc.Get_error_string()}); "
                "fault tolerance covers losses after start-up"
            ) from None

    def _serve(self, comm, ft: bool) -> None:
        if self.schedule is Schedule.STATIC:
            serve_static(comm, self.root)
        else:
            told = []
            if self._stop is not None:
                # From the handler, so between two Python steps of this
                # thread, never inside an MPI call.
                self._stop.on_signal = lambda signum: told.append(
                    comm.isend(signum, self.root, Tag.STOP)
                )
            serve_dynamic(comm, self.root)
            for request in told:  # a small message: done whether read or not
                poll.wait(request)
        # Ranks that are done wait longer between polls: nothing is urgent.
        leave(comm, ft, failed=False, backoff=poll.Backoff(cap=max(config.poll_max_sleep(), 5e-3)))


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def farm_map(comm, fn: Callable[[Any], Any] | None, tasks: Iterable[Any] | None, **options):
    """Apply ``fn`` to each task over ``comm``; collective. See :class:`Farm`.

    Returns:
        On the root, the results in input order; None on other ranks.
    """
    return Farm(comm, fn, **options).map(tasks)


def farm_imap_unordered(comm, fn, tasks, **options) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, result)`` on the root as tasks complete; collective."""
    return Farm(comm, fn, **options).imap_unordered(tasks)
