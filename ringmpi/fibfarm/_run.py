"""The Fibonacci farm: slow recursive fib of many n, farmed out over MPI."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence

from .. import fib as fibmod
from ..base.errors import EXIT_FAILURE, OutputClosed
from ..farm import Farm, FarmError, FarmStats, FarmTimeout
from ..harness import (
    ProgressBar,
    RingmpiError,
    UsageError,
    launch,
    print_result,
    quiet_stdout,
    start_watchdog,
)
from ..journal import summarize
from . import _report as fibreport
from ._args import build_parser, checked_tasks
from ._tasks import fib_cost, fib_of, subtasks


class VerifyError(RingmpiError):
    """A result differs from the exact Fibonacci number."""


def run(
    comm,
    tasks: Sequence[int] | None,
    *,
    schedule: str = "dynamic",
    split: int = 0,
    chunksize: int | None = None,
    task_timeout: float | None = None,
    fault_tolerant: bool = False,
    progress: Callable[[int, int], None] | None = None,
    trace: bool = False,
    journal: str | None = None,
    resume: bool | str = False,
    force_resume: bool = False,
    retries: int = 0,
    grace: float | None = None,
) -> tuple[list[int], FarmStats] | None:
    """Run the farm of ``fib`` over ``tasks``; collective.

    Args:
        comm: The communicator.
        tasks: The n of each task, read on rank 0 only.
        schedule: ``"dynamic"`` or ``"static"``.
        split: Unfold each ``fib(n)`` this many levels (see ``fib.split``).
        chunksize: Tasks per chunk (default: guided by each task's cost).
        task_timeout: Seconds one task may run.
        fault_tolerant: Survive lost workers under ULFM.
        progress: Called on the root as ``progress(done, total)``.
        trace: Record one span per farm item in ``stats.trace``.
        journal, resume, force_resume, retries, grace: As for ``Farm``.

    Returns:
        On the root ``(results, stats)`` with one exact int per task, else None.
    """
    items = subtasks(tasks, split) if tasks is not None else None
    farm = Farm(
        comm,
        fib_of,
        schedule=schedule,
        chunksize=chunksize,
        cost=fib_cost,
        task_timeout=task_timeout,
        progress=progress,
        fault_tolerant=fault_tolerant,
        trace=trace,
        journal=journal,
        resume=resume,
        force_resume=force_resume,
        retries=retries,
        grace=grace,
    )
    values = _mapped(farm, items, tasks)
    if values is None or tasks is None or items is None:
        return None
    results = [0] * len(tasks)
    for (index, _), value in zip(items, values):
        results[index] += value
    return results, farm.stats


def _mapped(
    farm: Farm, items: list[tuple[int, int]] | None, tasks: Sequence[int] | None
) -> list[int] | None:
    """``farm.map(items)``, whose errors name each task ``fib(n)`` rather than its item."""
    try:
        return farm.map(items)
    except (FarmError, FarmTimeout) as exc:
        if items is None or tasks is None:
            raise
        raise fibreport.named(exc, items, tasks) from exc.__cause__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the farm; see ``python -m ringmpi.fibfarm --help``."""
    from mpi4py import MPI

    args = build_parser().parse_args(argv)
    tasks = checked_tasks(args)
    if args.timeout is not None:
        watchdog = start_watchdog(args.timeout, "fibfarm")

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    with contextlib.ExitStack() as stack:
        progress = None
        if args.progress and rank == 0:
            progress = stack.enter_context(ProgressBar(len(tasks)))
        outcome = run(
            comm,
            tasks if rank == 0 else None,
            schedule=args.schedule,
            split=args.split,
            chunksize=args.chunksize,
            task_timeout=args.task_timeout,
            fault_tolerant=args.fault_tolerant,
            progress=progress,
            trace=bool(args.trace or args.timeline),
            journal=args.journal,
            resume="failed" if args.resume_failed else args.resume or args.force_resume,
            force_resume=args.force_resume,
            retries=args.retries,
            grace=args.grace,
        )
    if outcome is None:
        return 0
    results, stats = outcome
    if len(results) != len(tasks):
        raise RingmpiError(f"only {len(results)} of {len(tasks)} results came back")
    baseline = checked_results(tasks, results, verify=args.verify, baseline=args.baseline)
    if args.trace or args.timeline:
        fibreport.write_pictures(args, tasks, stats)
    if args.timeout is not None:
        watchdog.stop()
    print_result(
        fibreport.report(tasks, results, stats, baseline, comm.Get_size(), args), args.output
    )
    return 0


def checked_results(
    tasks: Sequence[int], results: Sequence[int], *, verify: bool, baseline: bool
) -> float | None:
    """Check the results as ``--verify`` and ``--baseline`` ask.

    Returns:
        The seconds of the sequential run, or None without ``baseline``.

    Raises:
        VerifyError: A result is wrong, or the sequential run disagrees.
    """
    if verify:
        wrong = [(n, v) for n, v in zip(tasks, results) if v != fibmod.fib_exact(n)]
        if wrong:
            n, v = wrong[0]
            raise VerifyError(
                f"{len(wrong)} wrong result(s): fib({n}) = {v}, expected {fibmod.fib_exact(n)}"
            )
    if not baseline:
        return None
    start = time.perf_counter()
    sequential = [fibmod.fib(n) for n in tasks]
    seconds = time.perf_counter() - start
    if sequential != list(results):
        raise VerifyError("the sequential run and the farm disagree")
    return seconds


def status(argv: Sequence[str] | None = None) -> int:
    """Print what a journal holds; ``--journal PATH --status``, without MPI."""
    args = build_parser().parse_args(argv)
    if args.journal is None:
        raise UsageError("--status needs --journal PATH")
    summary = summarize(args.journal)
    print_result(fibreport.format_status(args.journal, summary))
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """The command line: ``--status`` reads a journal without MPI, the rest
    runs under :func:`launch`."""
    words = list(sys.argv[1:] if argv is None else argv)
    if "--status" in words:
        try:
            return status(words)
        except OutputClosed:  # | head
            quiet_stdout()
            return 0
        except RingmpiError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return exc.exit_code or EXIT_FAILURE
    return launch(main, words, parser=build_parser)
