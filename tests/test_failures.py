"""The failure catalogue: every way a run can go wrong ends fast, clearly and cleanly.

Each case runs the real programs under ``mpiexec`` (or plain ``python``) and
checks the exit status, that there is one clear message and no traceback from
every rank, that it ends within its bound, that no process is left behind,
and that no ``done:`` success line appears unless every result is in.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mpirun as helper
import pytest

from ringmpi.fib import fib_exact

FAULTY = str(Path(__file__).parent / "programs" / "faulty_farm.py")
FAULTY_POOL = str(Path(__file__).parent / "programs" / "faulty_pool.py")
MISUSE = str(Path(__file__).parent / "programs" / "misuse_farm.py")
RING = ["-m", "ringmpi.ring"]
FIBFARM = ["-m", "ringmpi.fibfarm"]
#: fibfarm with its tasks held until the case's faults are in; "{hold}" is
#: replaced by the run's hold directory.
HELD = [str(Path(__file__).parent / "programs" / "held_fibfarm.py"), "{hold}"]
#: Tasks for the held runs: quick to compute, held as long as the fault needs.
BUSY = ["27", "27", "26", "26", "25", "25"]
BUSY_LINES = [f"fib({n}) = {fib_exact(int(n))}" for n in BUSY]
ANY = -1  # any non-zero status


@dataclass
class Case:
    """One way to fail, and what must follow.

    Attributes:
        n: Ranks.
        argv: Arguments after ``python``.
        status: Expected exit status (``ANY``: any non-zero).
        message: Regex that the one ``error:`` line (or, with ``source="mpiexec"``,
            the launcher's report) must match.
        source: Who reports: ``"ringmpi"`` (one ``error:`` line) or
            ``"mpiexec"`` (the launcher's own report of a killed rank).
        seconds: Bound on the run's wall time.
        fault: Called with the started process and the run's ``Hold``, to
            inject a fault; the held tasks are released after it.
        mpiexec_args: Extra launcher options.
        env: Extra environment.
        stdout: Expected result lines (a recovering run), else no ``done:``.
        also: Regexes that must each match a line of stdout.
        traceback: Whether one rank's traceback is expected (a bug, not a usage
            error); never one per rank.
        errors: How many ``error:`` lines may appear, all matching ``message``
            (more than one only where the rank that would report is stopped).
        traceback_line: With ``traceback``, a regex for the traceback's last line.
        tracebacks: With ``traceback``, how many ``Traceback`` headers (a task's
            remote traceback is printed as the cause of the root's).
    """

    n: int
    argv: list[str]
    status: int
    message: str
    source: str = "ringmpi"
    seconds: float = 20.0
    fault: Callable[[helper.Process, Hold], object] | None = None
    mpiexec_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    stdout: list[str] | None = None
    also: list[str] = field(default_factory=list)
    traceback: bool = False
    errors: int = 1
    traceback_line: str = r"^\[1@\S+\] RuntimeError: injected failure on rank 1$"
    tracebacks: int = 1


# -- injecting faults into running ranks ---------------------------------------


class Hold:
    """The hold directory of a ``held_fibfarm.py`` run.

    Its tasks write a marker when they start and wait for ``release``, so a
    fault injected while a rank holds a task lands mid-run on a machine of
    any speed or load.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def holding(self, rank: int) -> bool:
        """Return whether ``rank`` has started a task (and holds it until released)."""
        return any(self.directory.glob(f"started-{rank}-*"))

    def release(self) -> None:
        (self.directory / "release").touch()


def rank_pids(process: helper.Process) -> dict[int, int]:
    """Map rank -> pid for the ranks of a started ``mpiexec``."""
    ranks = {}
    for pid in helper.session_members(process.popen.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"OMPI_COMM_WORLD_RANK="):
                ranks[int(item.split(b"=", 1)[1])] = pid
    return ranks


def signal_when_holding(
    rank: int, sig: int, watch: int | None = None
) -> Callable[[helper.Process, Hold], int]:
    """A fault: send ``sig`` to ``rank`` once rank ``watch`` (default the same)
    holds a task of ``held_fibfarm.py``.

    The tasks are released only after every fault of the case, so the work
    cannot finish first however fast the machine is.
    """
    watched = rank if watch is None else watch

    def inject(process: helper.Process, hold: Hold) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                pytest.fail(f"the run ended before the fault\n{process.wait().describe()}")
            pid = rank_pids(process).get(rank)
            if pid is not None and hold.holding(watched):
                os.kill(pid, sig)
                return pid
            time.sleep(0.05)
        pytest.fail(f"rank {watched} never started a task\n{process.wait().describe()}")

    return inject


# -- the catalogue --------------------------------------------------------------

USAGE = {
    # every bad argument of the ring
    "ring-unknown-flag": Case(2, [*RING, "--bogus"], 2, "unrecognized arguments: --bogus"),
    "ring-rounds-0": Case(2, [*RING, "--rounds", "0"], 2, "--rounds: must be between 1 and 1"),
    "ring-rounds-neg": Case(3, [*RING, "--rounds", "-3"], 2, "--rounds: must be between 1 and"),
    "ring-rounds-abc": Case(2, [*RING, "-r", "abc"], 2, "--rounds: invalid integer 'abc'"),
    "ring-size-0": Case(2, [*RING, "--size", "0"], 2, "--size: invalid size '0'"),
    "ring-size-neg": Case(2, [*RING, "--size=-1"], 2, "--size: invalid size '-1'"),
    "ring-size-4Q": Case(2, [*RING, "--size", "4Q"], 2, "--size: invalid size '4Q'"),
    "ring-sweep-backwards": Case(2, [*RING, "--sweep", "4M:1K"], 2, "MIN is larger than MAX"),
    "ring-sweep-malformed": Case(2, [*RING, "--sweep", "1K"], 2, "use MIN:MAX"),
    "ring-size-and-sweep": Case(2, [*RING, "-s", "1K", "--sweep", "1:2K"], 2, "not both"),
    "ring-pickle-alone": Case(2, [*RING, "--pickle"], 2, "--pickle needs --size or --sweep"),
    "ring-repeat-0": Case(2, [*RING, "-s", "1", "--repeat", "0"], 2, "--repeat"),
    "ring-warmup-neg": Case(2, [*RING, "-s", "1", "--warmup=-1"], 2, "--warmup"),
    # every bad argument and bad n of the farm
    "fib-n-0": Case(3, [*FIBFARM, "0"], 2, "n must be at least 1"),
    "fib-n-neg": Case(3, [*FIBFARM, "-1"], 2, "n must be at least 1"),
    "fib-n-2.5": Case(3, [*FIBFARM, "2.5"], 2, r"invalid task '2\.5'"),
    "fib-n-abc": Case(3, [*FIBFARM, "abc"], 2, "invalid task 'abc'"),
    "fib-empty-task": Case(3, [*FIBFARM, ""], 2, "empty task"),
    "fib-empty-list": Case(3, [*FIBFARM, " , "], 2, "empty task"),
    "fib-range-open": Case(3, [*FIBFARM, "30-"], 2, "invalid task '30-'"),
    "fib-range-bad": Case(3, [*FIBFARM, "5-x"], 2, "invalid task '5-x'"),
    "fib-range-zero": Case(3, [*FIBFARM, "0-3"], 2, "n must be at least 1"),
    "fib-n-huge": Case(3, [*FIBFARM, "100"], 2, r"years of CPU time.*--force"),
    "fib-split-huge-n": Case(3, [*FIBFARM, "62", "--split", "8"], 2, r"days of CPU .*--force"),
    # refusals for any n, at once: no OverflowError, no exact huge ints
    "fib-n-1500": Case(3, [*FIBFARM, "1500"], 2, r"fib\(1500\) .* nests 1499 calls deep.* is 9"),
    "fib-range-10000": Case(3, [*FIBFARM, "1-10000"], 2, r"fib\(10000\) .* recursion limit"),
    "fib-n-1e8": Case(3, [*FIBFARM, "100000000"], 2, r"nests 99999999 calls deep"),
    "fib-n-800": Case(3, [*FIBFARM, "800"], 2, r"e\+16\d calls: .*years of CPU.*--force"),
    # bounded task counts, even with --force, without building the tasks
    "fib-split-too-many": Case(
        3, [*FIBFARM, "38", "--split", "30"], 2, r"--split 30 makes 38871188 sub-tasks"
    ),
    "fib-split-too-many-force": Case(
        3, [*FIBFARM, "92", "--force", "--split", "30"], 2, r"makes 1073741824 sub-tasks"
    ),
    "fib-range-too-many": Case(
        3, [*FIBFARM, "1-100000000", "--force"], 2, r"makes 100000000 tasks: .* at most"
    ),
    "fib-schedule": Case(3, [*FIBFARM, "--schedule", "random"], 2, "invalid choice: 'random'"),
    "fib-split-neg": Case(3, [*FIBFARM, "--split=-1"], 2, "--split: must be between 0 and 30"),
    "fib-split-big": Case(3, [*FIBFARM, "--split", "31"], 2, "--split: must be between"),
    "fib-chunksize-0": Case(3, [*FIBFARM, "--chunksize", "0"], 2, "--chunksize"),
    "fib-timeout-0": Case(
        3, [*FIBFARM, "--timeout", "0"], 2, "--timeout: must be a positive finite number"
    ),
    "fib-task-timeout-abc": Case(3, [*FIBFARM, "--task-timeout", "x"], 2, "invalid number"),
    "fib-ft-static": Case(
        3, [*FIBFARM, "--fault-tolerant", "--schedule", "static"], 2, "needs the dynamic"
    ),
    "fib-unknown-flag": Case(3, [*FIBFARM, "--bogus"], 2, "unrecognized arguments"),
    "fib-cores-env": Case(
        3,
        [*FIBFARM, "20"],
        2,
        "RINGMPI_CORES must be a positive integer",
        env={"RINGMPI_CORES": "abc"},
    ),
    "ring-poll-env": Case(
        2, RING, 2, "RINGMPI_POLL_MAX_SLEEP must be a number", env={"RINGMPI_POLL_MAX_SLEEP": "x"}
    ),
    **{
        f"init-timeout-env-{name}": Case(
            3,
            RING,
            2,
            "RINGMPI_INIT_TIMEOUT must be a number of seconds",
            env={"RINGMPI_INIT_TIMEOUT": value},
        )
        for name, value in (("abc", "abc"), ("inf", "inf"), ("nan", "nan"), ("huge", "1e30"))
    },
}

RUNTIME = {
    "task-raises": Case(
        3,
        [FAULTY, "raise"],
        ANY,
        r"task 5 \(5\) failed on rank \d+@\S+: "
        "ZeroDivisionError: task five divides by zero",
    ),
    "task-unpicklable": Case(
        3,
        [FAULTY, "unpicklable"],
        ANY,
        r"task 5 .* failed on rank \d+@\S+: the result could not be pickled",
    ),
    "task-sys-exit": Case(
        3, [FAULTY, "exit"], ANY, r"task 5 .* failed on rank \d+@\S+: SystemExit"
    ),
    "task-never-returns": Case(
        3, [FAULTY, "hang", "2"], ANY, r"rank \d+@\S+ has run task\(s\) 5 \(5\) for .* limit of 2 s"
    ),
    "run-timeout": Case(
        3,
        [*FIBFARM, "45", "--force", "--timeout", "2"],
        124,
        r"\[0@\S+\] fibfarm did not finish within 2 s",
    ),
    "worker-sigkill": Case(
        4,
        [*HELD, *BUSY],
        ANY,
        r"rank 2 with PID \d+ on node \S+ exited on",
        source="mpiexec",
        fault=signal_when_holding(2, signal.SIGKILL),
    ),
    "worker-sigkill-ft": Case(
        4,
        [*HELD, "--fault-tolerant", "--verify", *BUSY],
        0,
        "",
        seconds=60,
        fault=signal_when_holding(1, signal.SIGKILL),
        mpiexec_args=["--with-ft", "ulfm"],
        stdout=BUSY_LINES,
        also=[
            r"^lost worker rank 1@\S+; redid its tasks on the others: fib\(",
            r"^ +1 \S+ +\d+ +[\d.]+  \(lost\)$",
            "^verified 6",
            "^done: 6 of 6 results",
        ],
    ),
    # ULFM on, but the run not fault tolerant: the root sees MPI's "process
    # failed" error; one line names the lost rank and the fix, the job ends.
    "worker-sigkill-ulfm-not-ft": Case(
        4,
        [*HELD, *BUSY],
        ANY,
        r"^error: the farm lost rank 2@\S+ \(it died\): .*--fault-tolerant",
        seconds=30,
        fault=signal_when_holding(2, signal.SIGKILL),
        mpiexec_args=["--with-ft", "ulfm"],
    ),
    "all-workers-sigkill-ft": Case(
        3,
        [*HELD, "--fault-tolerant", "--verify", *BUSY],
        0,
        "",
        seconds=60,
        fault=lambda p, hold: [signal_when_holding(r, signal.SIGKILL)(p, hold) for r in (1, 2)],
        mpiexec_args=["--with-ft", "ulfm"],
        stdout=BUSY_LINES,
        also=[
            r"^lost worker rank 1@",
            r"^lost worker rank 2@",
            "^verified 6",
            "^done: 6 of 6 results",
        ],
    ),
    "worker-sigstop-task-timeout": Case(
        3,
        [*HELD, "--task-timeout", "3", *BUSY],
        ANY,
        r"rank 1@\S+ has run task\(s\)",
        fault=signal_when_holding(1, signal.SIGSTOP),
    ),
    "worker-sigstop-run-timeout": Case(
        3,
        [*HELD, "--timeout", "5", *BUSY],
        124,
        r"fibfarm did not finish within 5 s",
        fault=signal_when_holding(2, signal.SIGSTOP),
    ),
    "root-sigkill": Case(
        3,
        [*HELD, *BUSY],
        ANY,
        r"rank 0 with PID \d+ on node \S+ exited on",
        source="mpiexec",
        fault=signal_when_holding(0, signal.SIGKILL, watch=1),
    ),
    "root-sigstop-run-timeout": Case(
        3,
        [*HELD, "--timeout", "4", *BUSY],
        124,
        r"\[\d@\S+\] fibfarm did not finish",
        fault=signal_when_holding(0, signal.SIGSTOP, watch=1),
        # The stopped root reports too, once Open MPI wakes it to end it.
        errors=3,
    ),
    # The executor and the pool: a task raising in pool.map, the root's own code
    # raising inside the block, a worker killed (no ULFM) while tasks run.
    "pool-map-task-raises": Case(
        3,
        [FAULTY_POOL, "map-raises"],
        1,
        "",
        seconds=15,
        traceback=True,
        traceback_line=r"^\[0@\S+\] ZeroDivisionError: task five divides by zero$",
        tracebacks=2,
    ),
    "executor-block-raises": Case(
        3,
        [FAULTY_POOL, "block-raises"],
        1,
        "",
        seconds=15,
        traceback=True,
        traceback_line=r"^\[0@\S+\] RuntimeError: injected failure in the block$",
    ),
    "executor-task-never-returns": Case(
        3, [FAULTY_POOL, "hang"], ANY, r"rank \d+@\S+ has run task\(s\) \d+ .* limit of 2 s"
    ),
    "pool-worker-sigkill": Case(
        3,
        [FAULTY_POOL, "worker-killed", "{hold}"],
        ANY,
        r"rank 2 with PID \d+ on node \S+ exited on",
        source="mpiexec",
        fault=signal_when_holding(2, signal.SIGKILL),
    ),
    "pool-worker-sigkill-ft": Case(
        4,
        [FAULTY_POOL, "worker-killed-ft", "{hold}"],
        0,
        "",
        seconds=60,
        fault=signal_when_holding(1, signal.SIGKILL),
        mpiexec_args=["--with-ft", "ulfm"],
        stdout=[f"square({x}) = {x * x}" for x in range(6)],
    ),
    "uncaught-exception-one-rank": Case(3, [FAULTY, "crash"], 1, "", seconds=10, traceback=True),
    "ring-one-rank": Case(
        1,
        RING,
        0,
        "",
        stdout=[
            f"I am rank 0 of 1 on node {os.uname().nodename}",
            'Processor 0 received message "P0" from rank 0',
        ],
    ),
    "fibfarm-one-rank": Case(
        1, [*FIBFARM, "20", "21", "-q"], 0, "", stdout=["fib(20) = 6765", "fib(21) = 10946"]
    ),
}

MISUSE_MESSAGES = {
    "root=7": r"root must be a rank of the communicator, 0 to \d+, not 7",
    "root=-1": r"root must be a rank of the communicator, 0 to \d+, not -1",
    "chunksize=0": r"chunksize must be a whole number of at least 1, not 0",
    "schedule=bogus": r"schedule must be 'dynamic' or 'static', not 'bogus'",
    "errors=ignore": r"errors must be 'raise' or 'collect', not 'ignore'",
    "no-tasks": r"the root passed tasks=None",
    "not-iterable": r"the tasks must be iterable, not int",
    "cores=0": r"cores must be a whole number of at least 1, not 0",
    "chunk_size=2": r"unknown option\(s\): chunk_size \(did you mean chunksize\?\); the farm takes",
    # A bad option on the root alone: the others hear of it at once.
    "root-only:chunksize=0": r"chunksize must be a whole number of at least 1, not 0",
    "lambda": r"function main.<locals>.<lambda> .*not picklable.*define it at module level",
    "local": r"function main.<locals>.local .*not picklable.*define it at module level",
}

#: The library misused: one error line, exit 2, the same at every size.
MISUSES = {
    f"misuse-{mode}-n{n}": Case(n, [MISUSE, mode], 2, message, seconds=15)
    for mode, message in MISUSE_MESSAGES.items()
    for n in (1, 3)
}
# A bad option on one worker alone: it tells the root as it joins.
MISUSES["misuse-rank1-only:chunksize=0"] = Case(
    3, [MISUSE, "rank1-only:chunksize=0"], 2, r"chunksize must be a whole number", seconds=15
)
# A root that never calls: the workers time out alike, and one speaks.
MISUSES["misuse-root-skips"] = Case(
    4,
    [MISUSE, "root-skips"],
    ANY,
    r"the farm's root, rank 0, did not let it start within 3 s",
    env={"RINGMPI_JOIN_TIMEOUT": "3"},
    seconds=20,
)
# One worker that never calls: the root names it, the others say nothing.
MISUSES["misuse-rank1-skips"] = Case(
    4,
    [MISUSE, "rank1-skips"],
    ANY,
    r"rank\(s\) 1 of 4 did not call the farm with root 0 within 3 s",
    env={"RINGMPI_JOIN_TIMEOUT": "3"},
    seconds=20,
)
MISUSES["misuse-only-root-calls"] = Case(
    3,
    [MISUSE, "only-root"],
    ANY,
    r"rank\(s\) 1, 2 of 3 did not call the farm with root 0 within 3 s",
    env={"RINGMPI_JOIN_TIMEOUT": "3"},
    seconds=20,
)
MISUSES["misuse-unpicklable-task"] = Case(
    3,
    [MISUSE, "unpicklable-task"],
    ANY,
    r"task 2 \(<function main.<locals>.<lambda> .*\) failed on rank 0@\S+: "
    r"the task cannot be pickled to send to a worker: AttributeError",
    seconds=15,
)
MISUSES["task-keyboard-interrupt"] = Case(
    3, [FAULTY, "interrupt"], ANY, r"task 5 \(5\) failed on rank \d+@\S+: KeyboardInterrupt"
)
MISUSES["fib-static-task-timeout"] = Case(
    3,
    [*FIBFARM, "--schedule", "static", "--task-timeout", "1"],
    2,
    "--task-timeout needs the dynamic schedule",
)
# The root computes the task itself (-n 1): its time limit holds there too.
# fib(42) runs for seconds even on a machine several times faster than this.
MISUSES["root-task-timeout"] = Case(
    1,
    [*FIBFARM, "42", "--task-timeout", "1"],
    ANY,
    r"rank 0@\S+ has run task\(s\) .* past the limit of 1 s per task",
    seconds=20,
)

CATALOGUE = {**USAGE, **RUNTIME, **MISUSES}


def run_case(case: Case, hold_dir: Path) -> helper.Result:
    hold = Hold(hold_dir)
    process = helper.start_mpiexec(
        case.n,
        *[arg.replace("{hold}", str(hold_dir)) for arg in case.argv],
        env=case.env,
        mpiexec_args=case.mpiexec_args,
        timeout=case.seconds + 60,
    )
    try:
        if case.fault is not None:
            case.fault(process, hold)
    finally:
        hold.release()
    return process.wait()


def check_case(case: Case, result: helper.Result) -> None:
    why = result.describe()
    if case.status == ANY:
        assert result.returncode != 0, why
    else:
        assert result.returncode == case.status, why
    assert result.elapsed < case.seconds, why
    assert result.leftovers == [], f"processes left behind: {result.leftovers}\n{why}"
    if case.stdout is not None:
        results = ("fib(", "I am rank", "Processor 0", "square(")
        lines = [line for line in result.stdout_lines if line.startswith(results)]
        assert lines == case.stdout, why
    for pattern in case.also:
        assert re.search(pattern, result.stdout, re.MULTILINE), why
    if case.stdout is None:
        assert "done:" not in result.stdout, why
    tracebacks = result.stderr.count("Traceback (most recent call last)")
    if case.traceback:
        assert tracebacks == case.tracebacks, why
        assert re.search(case.traceback_line, result.stderr, re.MULTILINE), why
    else:
        assert tracebacks == 0, why
    if not case.message:
        return
    if case.source == "mpiexec":
        assert re.search(case.message, result.stderr), why
    else:
        assert 1 <= len(result.error_lines) <= case.errors, why
        assert all(re.search(case.message, line) for line in result.error_lines), why


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_failure(name, tmp_path):
    case = CATALOGUE[name]
    check_case(case, run_case(case, tmp_path))


def test_launcher_mismatch():
    # Two singletons that a launcher of another MPI library started as one job.
    processes = [
        helper.start_python(
            *FIBFARM, "20", env={"PMI_SIZE": "2", "PMI_RANK": str(rank)}, timeout=60
        )
        for rank in (0, 1)
    ]
    results = [p.wait() for p in processes]
    for result in results:
        assert result.returncode == 1, result.describe()
        assert result.leftovers == [], result.describe()
        assert "Traceback" not in result.stderr
        assert result.elapsed < 20
    assert len(results[0].error_lines) == 1 and results[1].error_lines == []
    assert "launcher started 2 processes" in results[0].error_lines[0]


@pytest.mark.parametrize("mode", ["close-early", "close-early-grace"])
def test_closing_imap_early_releases_every_rank(mode):
    result = helper.run_mpiexec(3, MISUSE, mode, timeout=60)
    assert result.returncode == 0, result.describe()
    assert "done: closed after 2" in result.stdout, result.describe()
    assert result.leftovers == [], result.describe()


def test_workers_do_not_spin_while_the_root_starts_late():
    result = helper.run_mpiexec(3, MISUSE, "late-root", timeout=60)
    assert result.returncode == 0, result.describe()
    line = next(x for x in result.stdout_lines if x.startswith("done: cpu per wall second"))
    shares = [float(x) for x in line.split()[-2:]]
    # Spinning would hold a core for the whole 3 s wait (a share near 1, or
    # its slice of an oversubscribed core); sleeping waits use next to none.
    assert max(shares) < 0.2, result.describe()


def test_a_closed_output_pipe_ends_quietly():
    # The reader is gone before the results are written, as with '| head'.
    process = subprocess.Popen(
        [sys.executable, *FIBFARM, "25-20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=helper.child_env(),
        cwd=helper.ROOT,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert b"Traceback" not in err and b"error:" not in err, err


def test_a_closed_pipe_after_status_ends_quietly(tmp_path):
    journal = str(tmp_path / "run.db")
    made = subprocess.run(
        [sys.executable, *FIBFARM, "1-5", "--journal", journal],
        capture_output=True, env=helper.child_env(), cwd=helper.ROOT, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    process = subprocess.Popen(
        [sys.executable, *FIBFARM, "--journal", journal, "--status"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=helper.child_env(),
        cwd=helper.ROOT,
    )
    assert process.stdout is not None
    process.stdout.close()  # as '| head -0'
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert b"Traceback" not in err and b"error:" not in err, err


@pytest.mark.parametrize("n", [1, 2])
def test_results_that_cannot_be_written_are_an_error(n):
    # Under mpiexec the launcher writes stdout and drops its errors: --output
    # makes rank 0 write the results itself.
    result = helper.run_mpiexec(n, *FIBFARM, "20", "--output", "/dev/full", timeout=60)
    assert result.returncode == 1, result.describe()
    assert result.error_lines == [
        "error: cannot write the results to /dev/full: No space left on device"
    ], result.describe()


def test_results_to_a_full_stdout_are_an_error():
    with open("/dev/full", "w") as full:
        process = subprocess.run(
            [sys.executable, *FIBFARM, "20"],
            stdout=full,
            stderr=subprocess.PIPE,
            env=helper.child_env(),
            cwd=helper.ROOT,
            timeout=60,
            text=True,
        )
    assert process.returncode == 1, process.stderr
    assert process.stderr.strip() == (
        "error: cannot write the results to standard output: No space left on device"
    )


@pytest.mark.parametrize("mode", ["break-then-farm", "break-then-farm-grace"])
def test_a_half_read_imap_does_not_hold_the_next_farm(mode):
    result = helper.run_mpiexec(3, MISUSE, mode, timeout=60)
    assert result.returncode == 0, result.describe()
    assert "done: next farm gave [0, 1, 4, 9, 16]" in result.stdout, result.describe()
    assert result.leftovers == [], result.describe()


def test_a_closed_stdout_is_one_error_line():
    process = subprocess.run(
        [sys.executable, *FIBFARM, "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=helper.child_env(),
        cwd=helper.ROOT,
        timeout=60,
        text=True,
        # Started with stdout closed, as by '>&-'.
        preexec_fn=lambda: os.close(1),
    )
    assert process.returncode == 1, process.stderr
    assert process.stderr.strip() == "error: cannot write the results: standard output is closed"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["-m", "ringmpi"], "error: cannot write to standard output: "),
        ([*FIBFARM, "20", "--trace", "/dev/full"], "error: cannot write /dev/full: "),
    ],
)
def test_other_writes_that_fail_are_one_error_line(argv, line):
    with open("/dev/full", "w") as full:
        process = subprocess.run(
            [sys.executable, *argv],
            stdout=full if argv[1] == "ringmpi" else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=helper.child_env(),
            cwd=helper.ROOT,
            timeout=60,
            text=True,
        )
    assert process.returncode == 1, process.stderr
    assert process.stderr.startswith(line) and process.stderr.count("\n") == 1, process.stderr


@pytest.mark.parametrize("size", ["1000G", "99999999999G"])
def test_a_ring_message_larger_than_memory_is_refused_at_once(size):
    result = helper.run_mpiexec(2, *RING, "--size", size, timeout=60)
    assert result.returncode == 2, result.describe()
    assert len(result.error_lines) == 1, result.describe()
    assert "GiB on rank 0 (the payload and a receive buffer)" in result.error_lines[0]
    assert "Traceback" not in result.stderr, result.describe()
