"""The farm's side of the run journal and of a clean stop on a signal.

A mixin of :class:`ringmpi.farm.Farm`: the root opens the journal before any
work, hands back what it already holds, records every outcome as it
arrives; after a stop signal every rank learns from the root whether the run
ended early.
"""

from __future__ import annotations

from typing import Any

from ..journal import Identity, Journal, JournalError
from . import _stop
from ._outcome import Errors, FarmStats, Outcome, short_repr
from ._stop import FarmStopped, Stop


class Resumable:
    """Journal and stop state of one farm run, on the root."""

    fn: Any
    root: int
    errors: Errors
    progress: Any
    stats: FarmStats
    journal_path: str | None
    resume: bool | str
    force_resume: bool
    #: During a run on the root: the open journal, the indices of the tasks
    #: this run computes, how many tasks have a final outcome and a result.
    _journal: Journal | None = None
    _todo: list[int]
    _final: int = 0
    _results: int = 0
    _stop: Stop | None = None

    @property
    def _is_root(self) -> bool:
        raise NotImplementedError

    def _open_journal(self, comm, tasks: list[Any]) -> list[tuple[int, Any]]:
        """Open the journal on the root and tell every rank whether it could.

        Returns:
            On the root, ``(index, value)`` of the tasks the journal already
            holds (their outcomes come back without running); else empty.
        """
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
        if decided:
            raise self._stopped(decided, total, collective=True)

    def _stopped(self, signum: int, total: int, collective: bool) -> FarmStopped:
        journal = self.journal_path if self._journal is not None else None
        done = self._journal.done if self._journal is not None else self._results
        return FarmStopped(signum, done, total, journal, collective)

    def _total(self) -> int:
        return self._journal.identity.tasks if self._journal is not None else len(self._todo)

    def _record(self, outcomes: list[Outcome], tasks: list[Any]) -> None:
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
