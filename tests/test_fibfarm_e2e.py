"""``python -m ringmpi.fibfarm`` under a real ``mpiexec``."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import mpirun as helper
import pytest

from ringmpi.fib import fib_exact

ARTICLE = [38, 37, 36, 35, 34, 33]
ARTICLE_LINES = [f"fib({n}) = {fib_exact(n)}" for n in ARTICLE]


def result_lines(result):
    return [line for line in result.stdout_lines if line.startswith("fib(")]


def assert_clean_failure(result, status, message):
    assert result.returncode == status, result.describe()
    assert len(result.error_lines) == 1, result.describe()
    assert re.search(message, result.error_lines[0]), result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    assert "done:" not in result.stdout, result.describe()


@pytest.mark.parametrize("n", [3, 8])
def test_article_tasks(mpirun, n):
    result = mpirun(n, "-m", "ringmpi.fibfarm", "--verify", timeout=120).check(0)
    assert result_lines(result) == ARTICLE_LINES
    assert "verified 6 results" in result.stdout
    assert re.search(r"^done: 6 of 6 results in [\d.]+ s$", result.stdout, re.MULTILINE)
    if n == 8:
        # Two cores: two ranks compute, the other five stay out of their way.
        assert "2 computing, 5 idle" in result.stdout, result.describe()


@pytest.mark.parametrize("n", [1, 2])
def test_small_worlds(mpirun, n):
    result = mpirun(n, "-m", "ringmpi.fibfarm", "25-20", "--verify").check(0)
    assert result_lines(result) == [f"fib({k}) = {fib_exact(k)}" for k in range(25, 19, -1)]
    assert "done: 6 of 6" in result.stdout


@pytest.mark.parametrize("split", ["0", "3"])
def test_verify_one_to_forty(mpirun, split):
    result = mpirun(
        3, "-m", "ringmpi.fibfarm", "1-40", "--verify", "--split", split, "-q", timeout=240
    ).check(0)
    assert result_lines(result) == [f"fib({k}) = {fib_exact(k)}" for k in range(1, 41)]


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_split_and_schedules(mpirun, schedule):
    result = mpirun(
        3,
        "-m",
        "ringmpi.fibfarm",
        "30",
        "27-25",
        "--split",
        "4",
        "--schedule",
        schedule,
        "--verify",
    ).check(0)
    assert result_lines(result) == [f"fib({k}) = {fib_exact(k)}" for k in (30, 27, 26, 25)]
    assert f"{schedule}, split 4" in result.stdout


def test_json_and_baseline(mpirun):
    result = mpirun(3, "-m", "ringmpi.fibfarm", "27-24", "--json", "--baseline").check(0)
    doc = json.loads(result.stdout)
    assert [(r["n"], r["fib"]) for r in doc["results"]] == [
        (k, fib_exact(k)) for k in range(27, 23, -1)
    ]
    assert doc["ranks"] == 3 and doc["sequential"] > 0 and doc["speedup"] > 0
    assert sum(w["tasks"] for w in doc["workers"]) == 4


def test_quiet_prints_only_results(mpirun):
    result = mpirun(2, "-m", "ringmpi.fibfarm", "10", "11", "-q").check(0)
    assert result.stdout_lines == ["fib(10) = 55", "fib(11) = 89"]


def test_progress_bar_on_stderr(mpirun):
    result = mpirun(3, "-m", "ringmpi.fibfarm", "20-1", "--progress", "-q").check(0)
    assert len(result_lines(result)) == 20
    assert "fib:" in result.stderr and "task" in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["0"], "n must be at least 1"),
        (["-1"], "n must be at least 1"),
        (["2.5"], r"invalid task '2\.5'"),
        (["abc"], "invalid task 'abc'"),
        ([""], "empty task"),
        (["30-"], "invalid task '30-'"),
        (["5-x"], "invalid task '5-x'"),
        (["100"], r"about .* years of CPU time .* --force"),
        (["--schedule", "random"], "invalid choice"),
        (["--split", "-1"], "--split"),
        (["--chunksize", "0"], "--chunksize"),
        (["--timeout", "0"], "--timeout"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input(mpirun, argv, message):
    result = mpirun(3, "-m", "ringmpi.fibfarm", *argv, timeout=30)
    assert_clean_failure(result, 2, message)
    assert result.elapsed < 20


FAILING = """
import sys
from mpi4py import MPI
from ringmpi.farm import farm_map
from ringmpi.harness import launch

def task(x):
    if x == 5:
        raise ZeroDivisionError("task five divides by zero")
    return x

def main(argv):
    results = farm_map(MPI.COMM_WORLD, task, range(10), chunksize=1)
    if results is not None:
        print("done:", results, flush=True)
    return 0

sys.exit(launch(main))
"""


def test_task_that_raises_ends_the_job_with_its_story(mpirun, tmp_path):
    program = tmp_path / "failing_task.py"
    program.write_text(FAILING)
    result = mpirun(3, str(program), timeout=30)
    assert result.returncode != 0, result.describe()
    assert "done:" not in result.stdout
    errors = result.error_lines
    assert len(errors) == 1, result.describe()
    assert re.search(r"task 5 \(5\) failed on rank \d+@\S+: ZeroDivisionError", errors[0])


def _rank_pids(process):
    """Map rank -> pid for the ranks of a run started with ``helper.start_mpiexec``."""
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


def _cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _kill_when_busy(process, rank, sig=signal.SIGKILL, busy_seconds=0.8, limit=60.0):
    """Send ``sig`` to ``rank`` once it has computed for ``busy_seconds``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        pid = _rank_pids(process).get(rank)
        if pid is not None:
            try:
                if _cpu_seconds(pid) >= busy_seconds:
                    os.kill(pid, sig)
                    return pid
            except (OSError, IndexError):
                pass
        time.sleep(0.1)
    pytest.fail(f"rank {rank} never got busy\n{process.wait().describe()}")


TASKS_FOR_KILL = ["33", "33", "32", "32", "31", "31"]


def test_fault_tolerant_farm_survives_a_killed_worker():
    process = helper.start_mpiexec(
        4,
        "-m",
        "ringmpi.fibfarm",
        "--fault-tolerant",
        "--verify",
        *TASKS_FOR_KILL,
        mpiexec_args=["--with-ft", "ulfm"],
        timeout=120,
    )
    _kill_when_busy(process, rank=1)
    result = process.wait().check(0)
    assert result_lines(result) == [f"fib({n}) = {fib_exact(int(n))}" for n in TASKS_FOR_KILL]
    assert re.search(
        r"lost worker rank 1@\S+; redid its tasks on the others: fib\(3\d\)", result.stdout
    ), result.describe()
    assert "done: 6 of 6" in result.stdout


def test_killed_worker_without_fault_tolerance_ends_the_job():
    process = helper.start_mpiexec(4, "-m", "ringmpi.fibfarm", *TASKS_FOR_KILL, timeout=60)
    killed = _kill_when_busy(process, rank=2)
    result = process.wait()
    assert result.returncode != 0, result.describe()
    assert "done:" not in result.stdout
    assert re.search(rf"rank 2 with PID {killed} .*\n?.*signal 9", result.stderr), result.describe()
    assert result.elapsed < 30


def test_stopped_worker_is_caught_by_the_task_timeout():
    process = helper.start_mpiexec(
        3,
        "-m",
        "ringmpi.fibfarm",
        "--task-timeout",
        "3",
        *TASKS_FOR_KILL,
        timeout=60,
    )
    _kill_when_busy(process, rank=1, sig=signal.SIGSTOP, busy_seconds=0.3)
    result = process.wait()
    assert result.returncode != 0, result.describe()
    assert "done:" not in result.stdout
    assert re.search(
        r"error: rank 1@\S+ has run task\(s\) .* past the limit of 3 s", result.stderr
    ), result.describe()


def test_whole_run_timeout(mpirun):
    result = mpirun(3, "-m", "ringmpi.fibfarm", "--timeout", "2", "36", "36", timeout=60)
    assert result.returncode == 124, result.describe()
    assert "done:" not in result.stdout
    assert re.search(r"error: \[0@\S+\] fibfarm did not finish within 2 s", result.stderr)
    assert result.elapsed < 20
