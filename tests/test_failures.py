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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mpirun as helper
import pytest

from ringmpi.fib import fib_exact

FAULTY = str(Path(__file__).parent / "programs" / "faulty_farm.py")
FAULTY_POOL = str(Path(__file__).parent / "programs" / "faulty_pool.py")
RING = ["-m", "ringmpi.ring"]
FIBFARM = ["-m", "ringmpi.fibfarm"]
#: Tasks that keep two workers busy for a few seconds.
BUSY = ["33", "33", "32", "32", "31", "31"]
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
        fault: Called with the started process, to inject a fault.
        mpiexec_args: Extra launcher options.
        env: Extra environment.
        stdout: Expected result lines (a recovering run), else no ``done:``.
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
    fault: Callable[[helper.Process], object] | None = None
    mpiexec_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    stdout: list[str] | None = None
    traceback: bool = False
    errors: int = 1
    traceback_line: str = r"^\[1@\S+\] RuntimeError: injected failure on rank 1$"
    tracebacks: int = 1


# -- injecting faults into running ranks ---------------------------------------


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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def signal_when_busy(
    rank: int, sig: int, busy: float = 0.8, watch: int | None = None
) -> Callable[[helper.Process], int]:
    """A fault: send ``sig`` to ``rank`` once rank ``watch`` (default the same)
    has used ``busy`` s of CPU.

    Waiting for CPU time, not wall time, puts the fault after start-up on a
    machine of any speed or load.
    """

    def inject(process: helper.Process) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pids = rank_pids(process)
            pid, watched = pids.get(rank), pids.get(rank if watch is None else watch)
            try:
                if pid is not None and watched is not None and cpu_seconds(watched) >= busy:
                    os.kill(pid, sig)
                    return pid
            except (OSError, IndexError):
                pass
            time.sleep(0.05)
        pytest.fail(f"rank {rank} never got busy\n{process.wait().describe()}")

    return inject


# -- the catalogue --------------------------------------------------------------

USAGE = {
    # every bad argument of the ring
    "ring-unknown-flag": Case(2, [*RING, "--bogus"], 2, "unrecognized arguments: --bogus"),
    "ring-rounds-0": Case(2, [*RING, "--rounds", "0"], 2, "--rounds: must be at least 1"),
    "ring-rounds-neg": Case(3, [*RING, "--rounds", "-3"], 2, "--rounds: must be at least 1"),
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
    "fib-split-huge-n": Case(3, [*FIBFARM, "60", "--split", "8"], 2, r"days of CPU .*--force"),
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
        [*FIBFARM, *BUSY],
        ANY,
        r"rank 2 with PID \d+ on node \S+ exited on",
        source="mpiexec",
        fault=signal_when_busy(2, signal.SIGKILL),
    ),
    "worker-sigkill-ft": Case(
        4,
        [*FIBFARM, "--fault-tolerant", "--verify", *BUSY],
        0,
        "",
        seconds=60,
        fault=signal_when_busy(1, signal.SIGKILL),
        mpiexec_args=["--with-ft", "ulfm"],
        stdout=BUSY_LINES,
    ),
    "all-workers-sigkill-ft": Case(
        3,
        [*FIBFARM, "--fault-tolerant", "--verify", *BUSY],
        0,
        "",
        seconds=60,
        fault=lambda p: [signal_when_busy(r, signal.SIGKILL)(p) for r in (1, 2)],
        mpiexec_args=["--with-ft", "ulfm"],
        stdout=BUSY_LINES,
    ),
    "worker-sigstop-task-timeout": Case(
        3,
        [*FIBFARM, "--task-timeout", "3", *BUSY],
        ANY,
        r"rank 1@\S+ has run task\(s\)",
        fault=signal_when_busy(1, signal.SIGSTOP, busy=0.3),
    ),
    "worker-sigstop-run-timeout": Case(
        3,
        [*FIBFARM, "--timeout", "5", *BUSY],
        124,
        r"fibfarm did not finish within 5 s",
        fault=signal_when_busy(2, signal.SIGSTOP, busy=0.3),
    ),
    "root-sigkill": Case(
        3,
        [*FIBFARM, *BUSY],
        ANY,
        r"rank 0 with PID \d+ on node \S+ exited on",
        source="mpiexec",
        fault=signal_when_busy(0, signal.SIGKILL, busy=0.4, watch=1),
    ),
    "root-sigstop-run-timeout": Case(
        3,
        [*FIBFARM, "--timeout", "4", *BUSY],
        124,
        r"\[\d@\S+\] fibfarm did not finish",
        fault=signal_when_busy(0, signal.SIGSTOP, busy=0.4, watch=1),
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
        [FAULTY_POOL, "worker-killed"],
        ANY,
        r"rank 2 with PID \d+ on node \S+ exited on",
        source="mpiexec",
        fault=signal_when_busy(2, signal.SIGKILL, busy=0.3),
    ),
    "pool-worker-sigkill-ft": Case(
        4,
        [FAULTY_POOL, "worker-killed-ft"],
        0,
        "",
        seconds=60,
        fault=signal_when_busy(1, signal.SIGKILL, busy=0.5),
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

CATALOGUE = {**USAGE, **RUNTIME}


def run_case(case: Case) -> helper.Result:
    process = helper.start_mpiexec(
        case.n,
        *case.argv,
        env=case.env,
        mpiexec_args=case.mpiexec_args,
        timeout=case.seconds + 60,
    )
    if case.fault is not None:
        case.fault(process)
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
    else:
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
def test_failure(name):
    case = CATALOGUE[name]
    check_case(case, run_case(case))


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
