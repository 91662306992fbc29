"""The farm itself: options, one run on every rank, the root's side, the journal and a stop.

A :class:`Farm` run joins the ranks on a private communicator and gives each
its role. The root plans which ranks compute, runs the static schedule
(:mod:`._static`) or the :class:`~._engine.Engine`, and yields each outcome as
it arrives, after recording it in the journal; it opens the journal before
any work and hands back what that already holds. After a stop signal every
rank learns from the root whether the run ended early.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..base import config, mpilib, poll
from ..base.errors import mark_degraded
from ..journal import Identity, Journal, JournalError
from . import _leftovers as leftovers
from . import _memory, _shared, _stop
from ._engine import Engine, IterSource, ListSource
from ._ft import leave
from ._options import check_or_defer
from ._outcome import (
    Errors,
    FarmError,
    FarmStartError,
    FarmStats,
    FarmTimeout,
    Outcome,
    Schedule,
    Tag,
    WorkerStats,
    check_not_in_task,
    short_repr,
)
from ._plan import balance, computing, make_chunks, plan_ranks, rank_facts
from ._start import FarmAbandoned, Unusable, check_setup, join_telling, refuse_if_hosted, start
from ._static import run_static
from ._stop import FarmStopped, Stop
from ._trace import Tracer, clock_offsets
from ._worker import Setup, serve_dynamic, serve_static

log = logging.getLogger("ringmpi.farm")

#: Tasks an iterator is read ahead by, per computing rank: enough to keep
#: every worker busy, few enough that an endless one costs little memory.
PULLED = 256

#: The ranks of a run as the root plans them: active, idle, root computes.
Ranks = tuple[list[int], list[int], bool]

#: On the root: the farm_imap_unordered run last started on each
#: communicator (by handle), until it is closed or dropped.
_unfinished: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


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
        join_timeout: Seconds every rank may take to call the farm (default
            ``RINGMPI_JOIN_TIMEOUT`` or 300; 0: for ever); past it, the root
            names the ranks that never came and every rank raises.
        trace: Record one ``TaskSpan`` per task in ``stats.trace``: rank,
            host, start and end on the root's clock, chunk, and when the root
            sent the chunk and had it back (see :mod:`.timeline`).
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
        memory_limit: Bytes (or ``"512M"``, ``"2G"``) of private memory a
            worker may hold while it runs a task (see :mod:`._memory`; Linux
            only): a task that allocates past it fails alone with
            ``MemoryError``, naming the limit. With a limit, the root
            computes only when it is the only rank.

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
        memory_limit: int | str | None = None,
        **unknown: Any,
    ):
        #: A bad option: raised on every rank once the farm has started.
        self._problem: str | None
        mpilib.check_ready()
        check_not_in_task(comm)
        self.errors, self.schedule, self._problem = check_or_defer(
            comm, unknown, Farm.__init__, errors=errors, schedule=schedule, root=root,
            fault_tolerant=fault_tolerant, task_timeout=task_timeout, chunksize=chunksize,
            retries=retries, resume=resume, grace=grace, cores=cores,
        )  # fmt: skip
        try:
            self.memory_limit = _memory.check_limit(memory_limit)
        except ValueError as exc:
            self.memory_limit = None
            self._problem = self._problem or str(exc)
        if join_timeout is None:
            join_timeout = config.join_timeout()
        self.join_timeout = join_timeout or None
        self.journal_path = None if journal is None else str(journal)
        self.resume = resume
        self.force_resume = force_resume
        self.retries = retries
        self.grace = grace
        #: During a run on the root: the open journal, the indices of the tasks
        #: this run computes, how many tasks have a final outcome and a result.
        self._journal: Journal | None = None
        self._todo: Sequence[int] = []
        self._final = 0
        self._results = 0
        #: During a run: the stop on a signal, with ``grace``.
        self._stop: Stop | None = None
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
        if isinstance(task_list, Lazy):
            pulled = dict(self._run(task_list))
            return [pulled[i] for i in range(len(pulled))]
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

    def _task_list(self, tasks: Iterable[Any] | None) -> list[Any] | Lazy | Unusable | None:
        if not self._is_root or tasks is None:
            return None
        # A farm left half-read on this communicator holds the workers:
        # finish it (cancel what it has not handed out) before this one.
        earlier = _unfinished.pop(self.comm.py2f(), None)
        if earlier is not None:
            earlier.close()
        try:
            iterator = iter(tasks)
        except TypeError:
            return Unusable(f"the tasks must be iterable, not {type(tasks).__name__}")
        if self._can_pull(tasks):
            return Lazy(iterator)
        try:
            return list(iterator)
        except Exception as exc:  # the caller's generator: the workers go at once
            return Unusable(f"reading the tasks failed on the root: {exc!r}", exc)

    def _can_pull(self, tasks: Iterable[Any]) -> bool:
        """Whether to read ``tasks`` as the workers need them rather than up front:
        an iterator (no length), with nothing that needs them all first (a
        journal's identity, costs to order them, a static split, a total for
        the progress)."""
        return not hasattr(tasks, "__len__") and (
            self.journal_path is None
            and self.cost is None
            and self.schedule is Schedule.DYNAMIC
            and self.progress is None
        )

    def _run(self, tasks: list[Any] | Lazy | Unusable | None) -> Iterator[tuple[int, Any]]:
        from mpi4py import MPI

        begin = time.perf_counter()
        refuse_if_hosted(self.comm)
        # A private communicator keeps the farm's messages apart from the
        # caller's, and lets fault tolerance change only its error handler.
        comm, told = join_telling(self.comm, self.root, self.join_timeout, self._problem)
        ft = self.fault_tolerant and config.ulfm_enabled()
        if ft:
            comm.Set_errhandler(MPI.ERRORS_RETURN)
        self._stop = None if self.grace is None else Stop(self.grace)
        finished = False
        running = leftovers.snapshot()
        try:
            layout = self._gather_layout(comm, ft)
            problem = plan = None
            if self._is_root:
                setup = (self.fn, self.initializer, self.initargs)
                problem = self._problem or told or check_setup(self.fn, setup, tasks)
                if self.shared is not None:
                    plan = _shared.Plan(self.shared)
                    problem = problem or plan.problem()
                assert layout is not None
                problem = problem or _memory.room_problem(
                    self.memory_limit, computing(layout, self.root)
                )
            try:
                trace = start(comm, self.root, problem, self.trace)
            except FarmAbandoned:
                trace = None
            if trace is None:  # the root's tasks failed: every rank goes at once
                finished = True
                if isinstance(tasks, Unusable) and tasks.error is not None:
                    raise tasks.error
                return
            assert not isinstance(tasks, Unusable)  # start() raised
            offsets = clock_offsets(comm, self.root) if trace else None
            kept = self._open_journal(comm, tasks)
            stopping = self._stop.installed() if self._stop else _nothing()
            with _shared.attach(comm, self.root, plan), stopping:
                if self._is_root:
                    assert tasks is not None
                    yield from kept
                    work = tasks if isinstance(tasks, Lazy) else [tasks[i] for i in self._todo]
                    try:
                        for index, value in self._root(comm, work, layout, ft, begin, offsets):
                            yield self._todo[index], value
                    except FarmTimeout as exc:
                        # The late worker cannot be released: if the caller
                        # goes on, the job still ends with the program (alone,
                        # the root's late task is on a daemon thread: no hang).
                        if comm.Get_size() > 1:
                            _stop.abort_job_at_exit(str(exc))
                        raise
                    except GeneratorExit:
                        if self._stop is not None:  # the workers wait to agree on a stop
                            _stop.agree(comm, 0, ft)
                        raise
                    self._agree_on_stop(comm, ft, self._total())
                else:
                    self._serve(comm, ft)
                    self._agree_on_stop(comm, ft, 0)
            finished = True
            # On the root the dynamic schedule runs tasks on the engine's
            # compute thread, which names what they leave.
            watched = self._is_root and self.schedule is Schedule.DYNAMIC
            where = f"{comm.Get_rank()}@{self.host}"
            left = None if watched else leftovers.warning(running, where)
            if left is not None:
                log.warning("%s", left)
        finally:
            journal, self._journal = self._journal, None
            if journal is not None:
                # After an error, that error says what went wrong.
                with contextlib.suppress(*(() if finished else (JournalError,))):
                    journal.close()
            if not self.stats.lost:
                comm.Free()

    def _gather_layout(self, comm, ft: bool) -> list[tuple[str, int, int | None]] | None:
        """Gather each rank's host and node cores on the root."""
        from mpi4py import MPI

        try:
            return comm.gather(rank_facts(comm), root=self.root)
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

    # -- the root's side of a run ----------------------------------------------

    def _root(
        self, comm, tasks, layout, ft: bool, start: float, offsets: dict[int, float] | None
    ) -> Iterator[tuple[int, Any]]:
        hosts, ranks = self._plan_ranks(layout, ft)
        active, idle, root_computes = ranks
        costs = (
            [float(self.cost(t)) for t in tasks] if self.cost and isinstance(tasks, list) else None
        )
        stats = self.stats = FarmStats(idle_ranks=idle, root_computes=root_computes, hosts=hosts)
        stats.workers = [WorkerStats(r, hosts[r]) for r in active]
        if root_computes:
            stats.workers.insert(0, WorkerStats(self.root, self.host))
        assert callable(self.fn)  # see check_setup
        setup: Setup = (_memory.wrap(self.fn, self.memory_limit), self.initializer, self.initargs)
        tracer = None
        if offsets is not None:
            origin = time.perf_counter() - start  # seconds of start-up already past
            tracer = Tracer(stats.trace, hosts, offsets, time.time() - origin)
        try:
            if self.schedule is Schedule.STATIC:
                yield from self._root_static(comm, tasks, ranks, costs, setup, tracer)
            else:
                yield from self._root_dynamic(comm, tasks, ranks, costs, setup, tracer, ft)
        except GeneratorExit:
            if self.schedule is Schedule.STATIC:  # everything was gathered already
                leave(comm, ft, failed=False)
            raise
        finally:
            stats.elapsed = time.perf_counter() - start
        leave(comm, ft, failed=bool(stats.lost))
        if isinstance(tasks, Lazy) and tasks.source is not None and tasks.source.error:
            raise tasks.source.error  # the task iterator's own error, the workers released
        if stats.errors and self.errors is Errors.RAISE:
            raise FarmError.of(stats.errors)

    def _plan_ranks(self, layout, ft: bool) -> tuple[list[str], Ranks]:
        """Return the hosts, and which ranks compute, from each rank's host and cores."""
        hosts, active, idle, root_computes = plan_ranks(
            layout, self.cores, self.root, self.memory_limit
        )
        if self.fault_tolerant and not ft:
            log.warning(
                "fault tolerance is not active (%s): a lost worker will end the job",
                mpilib.fault_tolerance_hint(),
            )
        return hosts, (active, idle, root_computes)

    def _root_static(
        self,
        comm,
        tasks: list[Any],
        ranks: Ranks,
        costs: list[float] | None,
        setup: Setup,
        tracer: Tracer | None,
    ) -> Iterator[tuple[int, Any]]:
        active, _, root_computes = ranks
        computing = ([self.root] if root_computes else []) + active
        shares = dict(zip(computing, balance(len(tasks), len(computing), costs)))
        self.stats.chunks = len(shares)
        outcomes = run_static(comm, self.root, self.host, tasks, shares, setup, self.stats, tracer)
        yield from self._emit(outcomes, tasks)

    def _root_dynamic(
        self,
        comm,
        tasks: list[Any] | Lazy,
        ranks: Ranks,
        costs: list[float] | None,
        setup: Setup,
        tracer: Tracer | None,
        ft: bool,
    ) -> Iterator[tuple[int, Any]]:
        active, idle, root_computes = ranks
        stats = self.stats
        computing = len(active) + int(root_computes)
        source: ListSource | IterSource
        if isinstance(tasks, Lazy):
            source = tasks.source = IterSource(tasks.iterator, max(1024, PULLED * computing))
        else:
            chunks = make_chunks(len(tasks), computing, self.chunksize, costs)
            stats.chunks = len(chunks)
            source = ListSource(tasks, chunks)
        engine = Engine(
            comm, self.root, self.host, setup, stats, source,
            computing=computing, ft=ft, stop_on_error=self.errors is Errors.RAISE,
            task_timeout=self.task_timeout, tracer=tracer,
            retries=self.retries, stop=self._stop,
            watch=self._journal.check if self._journal is not None else None,
        )  # fmt: skip
        engine.start(active, idle, root_computes)
        try:
            yield from self._emit(engine.outcomes(), tasks)
        except GeneratorExit:
            # The caller stopped reading: hand out nothing more, take back
            # what has not started, take in what runs, and let the workers go.
            engine.fail()
            for _ in engine.outcomes():
                pass
            engine.drain()
            leave(comm, ft, failed=bool(stats.lost))
            raise
        if engine.abandoned and self._stop is not None and self._stop.signum:
            # Tasks still running past the grace: end the job now.
            raise self._stopped(self._stop.signum, self._total(), collective=False)
        engine.drain()

    def _emit(self, batches: Iterable[list[Outcome]], tasks: Sequence[Any]):
        """Yield ``(index, value)`` per outcome; record errors, and yield them
        in place of the value when they are collected. Every outcome, a failed
        attempt that will be retried included, goes to the journal first."""
        done = self._final
        total = self._total()
        for outcomes in batches:
            retried = getattr(outcomes, "retried", ())
            if self._journal is not None:
                self._record(outcomes, tasks)
            for index, value, error in outcomes:
                if index in retried:
                    continue
                done += 1
                self._final += 1
                if error is None:
                    self._results += 1
                    yield index, value
                    continue
                self.stats.errors.append(error)
                if self.errors is Errors.COLLECT:
                    yield index, error
            if self.progress is not None:
                self.progress(done, total)

    # -- the journal and a clean stop ---------------------------------------------

    def _open_journal(self, comm, tasks: list[Any] | Lazy | None) -> list[tuple[int, Any]]:
        """Open the journal on the root and tell every rank whether it could.

        Returns:
            On the root, ``(index, value)`` of the tasks the journal already
            holds (their outcomes come back without running); else empty.
        """
        if isinstance(tasks, Lazy):  # no journal: every task pulled runs
            self._todo = tasks
            self._final = self._results = 0
            return []
        tasks = tasks or []
        self._todo = list(range(len(tasks)))
        self._final = self._results = 0
        if self.journal_path is None:
            return []
        problem = None
        if self._is_root:
            try:
                identity = Identity.of(self.fn, tasks)
                self._journal = Journal.open(
                    self.journal_path, identity, resume=bool(self.resume), force=self.force_resume
                )
            except JournalError as exc:
                problem = str(exc)
        # Decided on the root before any work: every rank raises the same error.
        problem = comm.bcast(problem, root=self.root)
        if problem is not None:
            raise JournalError(problem)
        if self._journal is None or not self._journal.previous:
            return []  # no journal, or nothing in it yet: every task runs
        kept: list[tuple[int, Any]] = []
        self._todo = []
        rerun_failed = self.resume == "failed" or self.errors is Errors.RAISE
        for index in range(len(tasks)):
            ok, value = self._journal.previous.get(index, (False, None))
            if ok or (index in self._journal.previous and not rerun_failed):
                kept.append((index, value))
            else:
                self._todo.append(index)
        self._final = len(kept)
        self._results = self._journal.done
        done = self._done_indices()
        errors = [value for index, value in kept if index not in done]
        self.stats.errors.extend(errors)
        if kept and self.progress is not None:
            self.progress(len(kept), len(tasks))
        return kept

    def _done_indices(self) -> set[int]:
        assert self._journal is not None
        return {i for i, (ok, _) in self._journal.previous.items() if ok}

    def _agree_on_stop(self, comm, ft: bool, total: int) -> None:
        """After a stop signal, every rank learns from the root whether the
        run ended early, and raises ``FarmStopped`` if it did."""
        if self._stop is None:
            return
        signum = self._stop.signum or 0
        early = self._is_root and signum and self._final < total
        decided = _stop.agree(comm, signum if early else 0, ft)
        if self._is_root:
            _stop.read_notes(comm, Tag.STOP)
        if decided:
            raise self._stopped(decided, total, collective=True)

    def _stopped(self, signum: int, total: int, collective: bool) -> FarmStopped:
        journal = self.journal_path if self._journal is not None else None
        done = self._journal.done if self._journal is not None else self._results
        return FarmStopped(signum, done, total, journal, collective)

    def _total(self) -> int:
        return self._journal.identity.tasks if self._journal is not None else len(self._todo)

    def _record(self, outcomes: list[Outcome], tasks: Sequence[Any]) -> None:
        journal = self._journal
        assert journal is not None
        todo = self._todo
        ends = getattr(outcomes, "ends", None) or [None] * len(outcomes)
        journal.record(
            [
                (todo[index], value, error, short_repr(tasks[index], 60), end)
                for (index, value, error), end in zip(outcomes, ends)
            ],
            getattr(outcomes, "rank", None),
            getattr(outcomes, "host", None),
            getattr(outcomes, "start", None),
        )


class Lazy(Sequence[int]):
    """Tasks read from an iterator as the workers need them.

    As the run's ``_todo`` it maps each task's index to itself, and its length
    is how many tasks were pulled so far.
    """

    def __init__(self, iterator: Iterator[Any]):
        self.iterator = iterator
        self.source: IterSource | None = None

    def __getitem__(self, index):
        return index

    def __len__(self) -> int:
        return self.source.count if self.source is not None else 0


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
