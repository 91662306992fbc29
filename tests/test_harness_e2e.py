"""The harness under a real ``mpiexec``: one rank fails while the others wait on it.

Also the launcher check, with plain ``python`` processes that a launcher of
another MPI would have started.
"""

from __future__ import annotations

import socket

import mpirun as helper
import pytest

HOST = socket.gethostname()

#: Seconds from the failure on one rank to the end of the whole job. Timed
#: from the failure, not from the start: start-up alone takes longer than
#: this on a loaded 2-core machine.
ABORT_WITHIN = 5.0

# Rank 1 says when, then fails as argv[2] says; every other rank waits for a
# message from it that never comes. argv[1] is "launch" (through ringmpi.harness.launch) or
# "plain" (main called directly, as a script without the harness would).
PROGRAM = """
import sys, time
from mpi4py import MPI
from ringmpi.harness import RingmpiError, launch

def main(argv):
    comm = MPI.COMM_WORLD
    if comm.Get_rank() == 1:
        time.sleep(0.2)
        print("rank 1 fails at", time.time(), flush=True)
        if argv[0] == "raise":
            raise ValueError("injected failure on rank 1")
        if argv[0] == "exit":
            sys.exit(3)
        raise RingmpiError("rank 1 gave up")
    comm.recv(source=1)
    return 0

if sys.argv[1] == "launch":
    sys.exit(launch(main, sys.argv[2:]))
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture
def program(tmp_path):
    """The program above, as a file: tracebacks then show its source lines."""
    path = tmp_path / "fail_on_rank_1.py"
    path.write_text(PROGRAM)
    return str(path)


def seconds_after_failure(result: helper.Result) -> float:
    """Return how long the job went on after rank 1 failed."""
    [line] = [line for line in result.stdout_lines if line.startswith("rank 1 fails at ")]
    return result.ended_at - float(line.split()[-1])


@pytest.mark.parametrize("n", [2, 4])
def test_uncaught_exception_on_one_rank_aborts_the_job(mpirun, program, n):
    result = mpirun(n, program, "launch", "raise", timeout=30)
    assert result.returncode == 1, result.describe()
    assert seconds_after_failure(result) < ABORT_WITHIN, result.describe()
    assert result.stderr.count("Traceback") == 1, result.describe()
    prefix = f"[1@{HOST}] "
    traceback = [line for line in result.stderr_lines if line.startswith(prefix)]
    assert traceback[0] == f"{prefix}Traceback (most recent call last):", result.describe()
    assert traceback[-1] == f"{prefix}ValueError: injected failure on rank 1", result.describe()
    assert any('raise ValueError("injected failure on rank 1")' in line for line in traceback)
    assert not result.leftovers, result.describe()


def test_sys_exit_on_one_rank_aborts_the_job_with_its_status(mpirun, program):
    result = mpirun(3, program, "launch", "exit", timeout=30)
    assert result.returncode == 3, result.describe()
    assert seconds_after_failure(result) < ABORT_WITHIN, result.describe()
    assert "Traceback" not in result.stderr, result.describe()


def test_error_on_one_rank_is_one_line_and_aborts_the_job(mpirun, program):
    result = mpirun(2, program, "launch", "error", timeout=30)
    assert result.returncode == 1, result.describe()
    assert seconds_after_failure(result) < ABORT_WITHIN, result.describe()
    assert result.error_lines == ["error: rank 1 gave up"], result.describe()
    assert "Traceback" not in result.stderr, result.describe()


def test_without_the_harness_the_same_program_hangs(mpirun, program):
    # What launch() is for: Python prints the traceback and rank 1 goes to
    # MPI_Finalize, while rank 0 waits for it for ever and mpiexec with it.
    result = mpirun(2, program, "plain", "raise", timeout=10, fail_on_timeout=False)
    assert result.timed_out, result.describe()
    assert "ValueError: injected failure on rank 1" in result.stderr, result.describe()
    assert seconds_after_failure(result) > 3, result.describe()
    # The kill reached every process of the job, ranks in their own process
    # groups included.
    assert len(result.leftovers) >= 3, result.describe()  # mpiexec and both ranks
    assert helper.session_members(result.leftovers[0]) == []


def _start_mismatched(rank: int, **env: str) -> helper.Process:
    return helper.start_python(
        "-m", "ringmpi.ring", env={"PMI_SIZE": "2", "PMI_RANK": str(rank), **env}, timeout=30
    )


def test_launcher_mismatch_is_reported_once():
    # Two singletons, as a launcher of another MPI library would start them.
    results = [p.wait() for p in [_start_mismatched(0), _start_mismatched(1)]]
    for result in results:
        assert result.returncode == 1, result.describe()
        assert result.stdout == "", result.describe()
        assert result.elapsed < 20, result.describe()
    rank0, rank1 = results
    assert len(rank0.error_lines) == 1, rank0.describe()
    assert rank0.error_lines[0].startswith(
        "error: the launcher started 2 processes (PMI_SIZE=2) but MPI sees a world of 1 rank"
    ), rank0.describe()
    assert rank1.stderr == "", rank1.describe()


def test_launcher_check_can_be_skipped():
    skip = {"RINGMPI_SKIP_LAUNCHER_CHECK": "1"}
    results = [p.wait() for p in [_start_mismatched(0, **skip), _start_mismatched(1, **skip)]]
    for result in results:
        result.check(0)
        assert result.stdout_lines == [
            f"I am rank 0 of 1 on node {HOST}",
            'Processor 0 received message "P0" from rank 0',
        ], result.describe()


WATCHED = """
import sys, time
from ringmpi.harness import launch, start_watchdog

def main(argv):
    watchdog = start_watchdog(0.2, "the test")
    time.sleep(60)
    watchdog.stop()
    return 0

sys.exit(launch(main))
"""


def test_a_watchdog_in_a_singleton_ends_it_with_one_line(tmp_path):
    # No launcher: MPI's abort would print a help text it cannot find.
    path = tmp_path / "watched.py"
    path.write_text(WATCHED)
    result = helper.run_python(str(path), timeout=30)
    assert result.returncode == 124, result.describe()
    assert result.stderr_lines == [
        f"error: [0@{HOST}] the test did not finish within 0.2 s (--timeout)"
    ], result.describe()
