"""The Fibonacci farm: slow recursive fib of many n, farmed out over MPI."""

from __future__ import annotations

import contextlib
import functools
import math
import re
import sys
import time
from collections.abc import Callable, Sequence

from . import __version__, fibreport, trace
from . import fib as fibmod
from . import journal as journalmod
from .errors import EXIT_FAILURE
from .farm import Farm, FarmStats
from .harness import (
    ArgumentParser,
    RingmpiError,
    UsageError,
    arg_type,
    int_arg,
    launch,
    plural,
    positive_float,
    print_result,
    start_watchdog,
)
from .progress import ProgressBar

PROG = "python -m ringmpi.fibfarm"
DEFAULT_TASKS = [38, 37, 36, 35, 34, 33]
#: Seconds a stopped run waits for the tasks in flight.
DEFAULT_GRACE = 5.0
#: Estimated single-core time above which a run needs --force.
MAX_SECONDS = 3600.0
#: Most tasks a run may have, after --split (even with --force): each costs
#: the root memory and time to hand out.
MAX_TASKS = 1_000_000


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"invalid number {text!r}") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"must be a finite number, 0 or more, not {text}")
    return value


non_negative_float = arg_type(_non_negative_float)

_RANGE_RE = re.compile(r"^\s*(-?\d+)\s*-\s*(-?\d+)\s*$")


class VerifyError(RingmpiError):
    """A result differs from the exact Fibonacci number."""


def parse_tasks(words: Sequence[str]) -> list[int]:
    """Parse numbers and ranges (``30-35`` or ``38-33``, ends included).

    Raises:
        ValueError: A word is not a positive integer or a range of them, or
            the list is empty.
    """
    tasks: list[int] = []
    for word in words:
        parts = word.replace(",", " ").split()
        if not parts:
            raise ValueError(
                "empty task: give positive integers such as 38 or ranges such as 30-35"
            )
        for part in parts:
            tasks += _parse_word(part, MAX_TASKS - len(tasks))
    if not tasks:
        raise ValueError("no tasks given")
    return tasks


def _parse_word(word: str, room: int) -> list[int]:
    match = _RANGE_RE.match(word)
    if match and not word.strip().startswith("-"):
        lo, hi = int(match.group(1)), int(match.group(2))
        if min(lo, hi) < 1:
            raise ValueError(f"invalid range {word!r}: n must be at least 1")
        if abs(hi - lo) + 1 > room:
            raise ValueError(
                f"range {word!r} makes {abs(hi - lo) + 1} tasks: a run may have at most {MAX_TASKS}"
            )
        step = 1 if hi >= lo else -1
        return list(range(lo, hi + step, step))
    try:
        n = int(word)
    except ValueError:
        raise ValueError(
            f"invalid task {word!r}: give positive integers such as 38 or ranges such as 30-35"
        ) from None
    if n < 1:
        raise ValueError(f"invalid task {word!r}: n must be at least 1")
    return [n]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="compute the slow recursive Fibonacci of each task over MPI ranks",
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "tasks",
        nargs="*",
        help="numbers and ranges such as 38 37 or 38-33 (default 38-33)",
    )
    parser.add_argument(
        "--schedule",
        choices=["dynamic", "static"],
        default="dynamic",
        help="workers pull tasks (dynamic, default) or get balanced shares up front (static)",
    )
    parser.add_argument(
        "--split",
        type=int_arg(0, 30),
        default=0,
        metavar="D",
        help="unfold each fib(n) D levels into up to 2^D sub-calls (same work, smaller pieces)",
    )
    parser.add_argument(
        "--chunksize", type=int_arg(1), default=None, metavar="N", help="tasks per chunk"
    )
    parser.add_argument(
        "--baseline", action="store_true", help="also time a sequential run and show the speed-up"
    )
    parser.add_argument(
        "--verify", action="store_true", help="check every result against exact Fibonacci"
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="abort the run after SECONDS",
    )
    parser.add_argument(
        "--task-timeout",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="abort when one task runs longer than this",
    )
    parser.add_argument(
        "--fault-tolerant",
        action="store_true",
        help="survive lost workers (needs 'mpiexec --with-ft ulfm')",
    )
    parser.add_argument(
        "--force", action="store_true", help="run even when the estimate is over an hour"
    )
    _add_journal_options(parser.add_argument_group("journal (keep every result; resume)"))
    parser.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    parser.add_argument(
        "--trace",
        metavar="FILE.json",
        help="write one span per task in Chrome Trace Event format (Perfetto, chrome://tracing)",
    )
    parser.add_argument(
        "--timeline",
        metavar="FILE.png",
        help="draw the run as a Gantt chart, a row per rank (needs matplotlib)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the results to FILE instead of stdout (a write error is then an error)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the results")
    return parser


def _add_journal_options(parser) -> None:
    parser.add_argument(
        "--journal",
        metavar="PATH",
        default=None,
        help="record every result in this SQLite journal as it arrives",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --journal: skip the tasks it holds a result for",
    )
    parser.add_argument(
        "--resume-failed",
        action="store_true",
        help="like --resume, and run again the tasks whose journal entry is an error",
    )
    parser.add_argument(
        "--force-resume",
        action="store_true",
        help="resume even a journal of another task list",
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="print what --journal holds (done, failed, missing, slowest) and exit; no MPI",
    )
    parser.add_argument(
        "--retries",
        type=int_arg(0),
        default=0,
        metavar="K",
        help="run a task that raised again, up to K times (dynamic schedule)",
    )
    parser.add_argument(
        "--grace",
        type=non_negative_float,
        default=DEFAULT_GRACE,
        metavar="S",
        help="on SIGTERM/SIGINT/SIGUSR1, wait up to S seconds for tasks in flight "
        f"(default {DEFAULT_GRACE:g})",
    )


def subtasks(tasks: Sequence[int], depth: int) -> list[tuple[int, int]]:
    """Return ``(task_index, m)`` for every sub-call of every task."""
    return [(i, m) for i, n in enumerate(tasks) for m in fibmod.split(n, depth)]


def fib_of(item: tuple[int, int]) -> int:
    """Farm function for split tasks: ``fib`` of the sub-call argument."""
    return fibmod.fib(item[1])


def fib_cost(item: tuple[int, int]) -> float:
    """Relative cost of a split task: the calls it makes (capped, to stay a float)."""
    return _calls_of(item[1])


@functools.lru_cache(maxsize=4096)
def _calls_of(n: int) -> float:
    # Runs of many tasks repeat the same few n: work each out once.
    return 10 ** min(fibmod.log10_calls(n), 290.0)


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
    values = farm.map(items)
    if values is None or tasks is None or items is None:
        return None
    results = [0] * len(tasks)
    for (index, _), value in zip(items, values):
        results[index] += value
    return results, farm.stats


def checked_tasks(args) -> list[int]:
    """Return the tasks the arguments ask for, or raise ``UsageError`` at once.

    Every check is instant whatever the numbers: a run too large is refused
    from estimates, without building its tasks.
    """
    try:
        tasks = parse_tasks(args.tasks) if args.tasks else list(DEFAULT_TASKS)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.fault_tolerant and args.schedule != "dynamic":
        raise UsageError("--fault-tolerant needs the dynamic schedule")
    if args.task_timeout is not None and args.schedule != "dynamic":
        raise UsageError(
            "--task-timeout needs the dynamic schedule (a static share is not watched task by task)"
        )
    if args.split:
        count = 0
        for n in tasks:  # stops at the bound: never builds the sub-tasks
            count += fibmod.split_count(n, args.split)
            if count > MAX_TASKS:
                total = sum(fibmod.split_count(n, args.split) for n in tasks)
                raise UsageError(
                    f"--split {args.split} makes {total} sub-tasks of "
                    f"{plural(len(tasks), 'task')}: a run may have at most {MAX_TASKS}; "
                    "give a smaller --split"
                )
    if args.retries and args.schedule != "dynamic":
        raise UsageError("--retries needs the dynamic schedule")
    for flag in ("resume", "resume_failed", "force_resume"):
        if getattr(args, flag) and args.journal is None:
            raise UsageError(f"--{flag.replace('_', '-')} needs --journal PATH")
    log_estimate = fibmod.log10_estimate_seconds(tasks)
    if log_estimate > math.log10(MAX_SECONDS) and not args.force:
        biggest = max(tasks)
        calls = fibreport.power(fibmod.log10_calls(biggest))
        cpu = fibreport.log_duration(log_estimate)
        raise UsageError(
            f"fib({biggest}) by naive recursion makes {calls} "
            f"calls: these tasks would take about {cpu} of CPU time "
            f"(at {fibmod.CALLS_PER_SECOND:.1e} calls/s); pass --force to run them anyway"
        )
    if args.timeline and not trace.have_matplotlib():
        raise UsageError(f"--timeline needs matplotlib: {trace.PLOT_HINT}")
    return tasks


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
    if args.verify:
        wrong = [(n, v) for n, v in zip(tasks, results) if v != fibmod.fib_exact(n)]
        if wrong:
            n, v = wrong[0]
            raise VerifyError(
                f"{len(wrong)} wrong result(s): fib({n}) = {v}, expected {fibmod.fib_exact(n)}"
            )
    baseline = None
    if args.baseline:
        start = time.perf_counter()
        sequential = [fibmod.fib(n) for n in tasks]
        baseline = time.perf_counter() - start
        if sequential != results:
            raise VerifyError("the sequential run and the farm disagree")
    if args.trace or args.timeline:
        fibreport.write_pictures(args, tasks, stats)
    if args.timeout is not None:
        watchdog.stop()
    print_result(
        fibreport.report(tasks, results, stats, baseline, comm.Get_size(), args), args.output
    )
    return 0


def status(argv: Sequence[str] | None = None) -> int:
    """Print what a journal holds; ``--journal PATH --status``, without MPI."""
    args = build_parser().parse_args(argv)
    if args.journal is None:
        raise UsageError("--status needs --journal PATH")
    summary = journalmod.summarize(args.journal)
    print(fibreport.format_status(args.journal, summary), flush=True)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """The command line: ``--status`` reads a journal without MPI, the rest
    runs under :func:`launch`."""
    words = list(sys.argv[1:] if argv is None else argv)
    if "--status" in words:
        try:
            return status(words)
        except RingmpiError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return exc.exit_code or EXIT_FAILURE
    return launch(main, words)


if __name__ == "__main__":
    sys.exit(cli())
