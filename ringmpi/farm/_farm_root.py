"""The root's side of one farm run: plan the ranks, drive the schedule, emit outcomes.

A mixin of :class:`~._farm.Farm` over :class:`~._resume.Resumable`: the root
decides which ranks compute, runs the static schedule (:mod:`._static`) or a
:class:`~._root.Dispatcher`, and yields each outcome as it arrives, after
recording it in the journal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import config
from ..errors import RingmpiError
from ._ft import leave
from ._outcome import Errors, FarmError, FarmStats, Outcome, Schedule, WorkerStats
from ._plan import balance, make_chunks, plan_workers
from ._resume import Resumable
from ._root import Dispatcher
from ._static import run_static
from ._trace import Tracer
from ._worker import Setup

log = logging.getLogger("ringmpi.farm")

#: The ranks of a run as the root plans them: active, idle, root computes.
Ranks = tuple[list[int], list[int], bool]


class RootRun(Resumable):
    """The root's side of a :class:`~._farm.Farm` run."""

    host: str
    cores: int | None
    cost: Callable[[Any], float] | None
    fault_tolerant: bool
    schedule: Schedule
    chunksize: int | None
    task_timeout: float | None
    retries: int
    initializer: Callable[..., Any] | None
    initargs: tuple[Any, ...]

    def _root(
        self, comm, tasks, layout, ft: bool, start: float, offsets: dict[int, float] | None
    ) -> Iterator[tuple[int, Any]]:
        hosts, ranks = self._plan_ranks(layout, ft)
        active, idle, root_computes = ranks
        costs = [float(self.cost(t)) for t in tasks] if self.cost else None
        stats = self.stats = FarmStats(idle_ranks=idle, root_computes=root_computes, hosts=hosts)
        stats.workers = [WorkerStats(r, hosts[r]) for r in active]
        if root_computes:
            stats.workers.insert(0, WorkerStats(self.root, self.host))
        assert callable(self.fn)  # see check_setup
        setup: Setup = (self.fn, self.initializer, self.initargs)
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
        if stats.errors and self.errors is Errors.RAISE:
            raise FarmError.of(stats.errors)

    def _plan_ranks(self, layout, ft: bool) -> tuple[list[str], Ranks]:
        """Return the hosts, and which ranks compute, from each rank's host and cores."""
        hosts = [host for host, _ in layout]
        try:
            override = self.cores or config.cores()
        except ValueError as exc:
            raise RingmpiError(str(exc)) from None
        cores = [override or node for _, node in layout]
        active, idle, root_computes = plan_workers(hosts, cores, self.root)
        root_computes = root_computes or not active
        if self.fault_tolerant and not ft:
            log.warning(
                "fault tolerance is not active (launch with 'mpiexec --with-ft ulfm'): "
                "a lost worker will end the job"
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
        tasks: list[Any],
        ranks: Ranks,
        costs: list[float] | None,
        setup: Setup,
        tracer: Tracer | None,
        ft: bool,
    ) -> Iterator[tuple[int, Any]]:
        active, idle, root_computes = ranks
        stats = self.stats
        computing = len(active) + int(root_computes)
        chunks = make_chunks(len(tasks), computing, self.chunksize, costs)
        stats.chunks = len(chunks)
        dispatcher = Dispatcher(
            comm, self.root, self.host, tasks, chunks, setup, stats,
            ft=ft, stop_on_error=self.errors is Errors.RAISE,
            task_timeout=self.task_timeout, tracer=tracer,
            retries=self.retries, stop=self._stop,
            watch=self._journal.check if self._journal is not None else None,
        )  # fmt: skip
        dispatcher.start(active, idle, root_computes)
        try:
            yield from self._emit(dispatcher.outcomes(), tasks)
        except GeneratorExit:
            # The caller stopped reading: hand out nothing more, take in what
            # is in flight, and let the workers go.
            dispatcher.failed = True
            for _ in dispatcher.outcomes():
                pass
            dispatcher.drain()
            leave(comm, ft, failed=bool(stats.lost))
            raise
        if dispatcher.abandoned and self._stop is not None and self._stop.signum:
            # Chunks still in flight past the grace: end the job now.
            raise self._stopped(self._stop.signum, self._total(), collective=False)
        dispatcher.drain()

    def _emit(self, batches: Iterable[list[Outcome]], tasks: list[Any]):
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
