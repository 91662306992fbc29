"""fibfarm's command line: its flags, the task list, and the checks made before any work."""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
import sys
from collections.abc import Sequence

from .. import __version__
from .. import fib as fibmod
from ..base.errors import TooLarge, UsageError, parse_int, quoted, shown
from ..farm import timeline as trace
from ..harness import ArgumentParser, arg_type, int_arg, memory_size, plural, positive_float
from . import _report as fibreport

PROG = "python -m ringmpi.fibfarm"
DEFAULT_TASKS = [38, 37, 36, 35, 34, 33]
#: Seconds a stopped run waits for the tasks in flight.
DEFAULT_GRACE = 5.0
#: Estimated single-core time above which a run needs --force.
MAX_SECONDS = 3600.0
#: Most tasks a run may have, after --split (even with --force): each costs
#: the root memory and time to hand out.
MAX_TASKS = 1_000_000
#: Frames kept free below the recursion limit for the ones under the kernel:
#: the farm's loop, the launcher, and a test runner's when run in-process.
RECURSION_MARGIN = 100
#: Digits of the largest n the command line reads: far past any n that can
#: run, so that the usual refusal (the depth, the estimate) explains it.
MAX_N_DIGITS = 9


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"invalid number {quoted(text)}") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"must be a finite number, 0 or more, not {shown(text)}")
    return value


non_negative_float = arg_type(_non_negative_float)

_RANGE_RE = re.compile(r"^\s*(-?\d+)\s*-\s*(-?\d+)\s*$")


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
        lo, hi = _task_n(match.group(1), word), _task_n(match.group(2), word)
        if min(lo, hi) < 1:
            raise ValueError(f"invalid range {quoted(word)}: n must be at least 1")
        if abs(hi - lo) + 1 > room:
            raise ValueError(
                f"range {quoted(word)} makes {abs(hi - lo) + 1} tasks: "
                f"a run may have at most {MAX_TASKS}"
            )
        step = 1 if hi >= lo else -1
        return list(range(lo, hi + step, step))
    try:
        n = _task_n(word, word)
    except TooLarge:
        raise
    except ValueError:
        raise ValueError(
            f"invalid task {quoted(word)}: give positive integers such as 38 "
            "or ranges such as 30-35"
        ) from None
    if n < 1:
        raise ValueError(f"invalid task {quoted(word)}: n must be at least 1")
    return [n]


def _task_n(text: str, word: str) -> int:
    """One n of a task, refused at once when it has more digits than any n
    that could run (Python's recursion limit stops the kernel near 1000)."""
    try:
        return parse_int(text, MAX_N_DIGITS)
    except TooLarge:
        raise TooLarge(
            f"invalid task {quoted(word)}: n is too large (more than {MAX_N_DIGITS} digits)"
        ) from None


def build_parser() -> ArgumentParser:
    """Return the parser of ``python -m ringmpi.fibfarm``."""
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
    _add_run_options(parser)
    _add_journal_options(parser.add_argument_group("journal (keep every result; resume)"))
    _add_output_options(parser)
    return parser


def _add_run_options(parser) -> None:
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
        "--memory-limit",
        type=memory_size,
        default=None,
        metavar="SIZE",
        help="fail a task whose worker holds more than SIZE (512M, 2G) of private memory "
        "while it runs (Linux)",
    )
    parser.add_argument(
        "--fault-tolerant",
        action="store_true",
        help="survive lost workers (needs Open MPI 5 and 'mpiexec --with-ft ulfm')",
    )
    parser.add_argument(
        "--force", action="store_true", help="run even when the estimate is over an hour"
    )


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


def _add_output_options(parser) -> None:
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
        _check_split_count(tasks, args.split)
    if args.retries and args.schedule != "dynamic":
        raise UsageError("--retries needs the dynamic schedule")
    for flag in ("resume", "resume_failed", "force_resume"):
        if getattr(args, flag) and args.journal is None:
            raise UsageError(f"--{flag.replace('_', '-')} needs --journal PATH")
    # What cannot run at all first; --force overrides only the estimate.
    _check_depth(tasks, args.split, args.baseline)
    if not args.force:
        _check_estimate(tasks)
    if args.timeline:
        if not trace.have_matplotlib():
            raise UsageError(f"--timeline needs matplotlib: {trace.PLOT_HINT}")
        try:
            trace.timeline_format(args.timeline)
        except ValueError as exc:
            raise UsageError(f"--timeline {args.timeline}: {exc}") from None
    check_outputs(args)
    return tasks


def check_outputs(args) -> None:
    """Refuse two outputs (``--journal``, ``--trace``, ``--timeline``, ``-o``)
    that name the same file: the second would overwrite the first.

    Devices (``/dev/null``, ``/dev/stdout``) may be named more than once.
    """
    seen: dict[str, str] = {}
    for flag, path in (
        ("--journal", args.journal),
        ("--trace", args.trace),
        ("--timeline", args.timeline),
        ("-o", args.output),
    ):
        if path is None:
            continue
        real = os.path.realpath(path)
        with contextlib.suppress(OSError):
            if not stat.S_ISREG(os.stat(real).st_mode):
                continue
        if real in seen:
            raise UsageError(
                f"{seen[real]} and {flag} both name {shown(path)}: give each its own file"
            )
        seen[real] = flag


def _check_split_count(tasks: Sequence[int], depth: int) -> None:
    count = 0
    for n in tasks:  # stops at the bound: never builds the sub-tasks
        count += fibmod.split_count(n, depth)
        if count > MAX_TASKS:
            total = sum(fibmod.split_count(n, depth) for n in tasks)
            raise UsageError(
                f"--split {depth} makes {total} sub-tasks of "
                f"{plural(len(tasks), 'task')}: a run may have at most {MAX_TASKS}; "
                "give a smaller --split"
            )


def _check_estimate(tasks: Sequence[int]) -> None:
    log_estimate = fibmod.log10_estimate_seconds(tasks)
    if log_estimate > math.log10(MAX_SECONDS):
        biggest = max(tasks)
        calls = fibreport.power(fibmod.log10_calls(biggest))
        cpu = fibreport.log_duration(log_estimate)
        raise UsageError(
            f"fib({biggest}) by naive recursion makes {calls} "
            f"calls: these tasks would take about {cpu} of CPU time "
            f"(at {fibmod.CALLS_PER_SECOND:.1e} calls/s); pass --force to run them anyway"
        )


def max_depth() -> int:
    """Return how deep the recursive kernel may nest here: the recursion limit, less a margin."""
    return sys.getrecursionlimit() - RECURSION_MARGIN


def _check_depth(tasks: Sequence[int], split: int, baseline: bool) -> None:
    """Refuse tasks whose recursion would pass Python's limit, ``--force`` or not.

    The farm runs the sub-calls of a split, ``split`` levels shallower; the
    sequential ``--baseline`` runs each ``fib(n)`` whole.
    """
    unfold = 0 if baseline else split
    biggest = max(tasks)
    deepest = fibmod.largest_split(biggest, unfold)
    if fibmod.stack_depth(deepest) <= max_depth():
        return
    runs = f"fib({biggest})"
    if deepest != biggest:
        runs += f" with --split {split} runs fib({deepest}), which"
    largest = f"{max_depth() + 1 + unfold}" + (f" with --split {split}" if unfold else "")
    why = " (--baseline runs each fib(n) whole)" if baseline and split else ""
    raise UsageError(
        f"{runs} by naive recursion nests {fibmod.stack_depth(deepest)} calls deep, past "
        f"Python's recursion limit ({sys.getrecursionlimit()}, less {RECURSION_MARGIN} for "
        f"the frames under the kernel): the largest n that can run is {largest}{why}"
    )
