"""The run journal under a real ``mpiexec``: crashes, signals, retries, refusals.

Faults are injected on conditions (rows in the journal, files the tasks
write), never after a wall-clock sleep.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import mpirun as helper
import pytest
from test_failures import rank_pids

PROGRAM = str(Path(__file__).parent / "programs" / "journal_farm.py")
RANKS = 3
#: Tasks a run can have started but not journaled: one chunk of one task per rank.
IN_FLIGHT = RANKS
GRACE = 5.0
#: Tasks from index 60 on never end: a run stopped mid-way cannot finish first.
HOLD = ("--hold-from", "60")


def done_rows(db: Path) -> int:
    """Tasks with a result in the journal (0 while there is none)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(DISTINCT idx) FROM attempts WHERE ok").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def computed(count: Path) -> list[int]:
    return [int(line) for line in count.read_text().split()] if count.exists() else []


def wait_until(process: helper.Process, ready, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        if process.popen.poll() is not None:
            pytest.fail(f"ended before {what}\n{process.wait().describe()}")
        time.sleep(0.005)
    pytest.fail(f"never {what}\n{process.wait().describe()}")


def wait_all_gone(process: helper.Process, seconds: float) -> helper.Result:
    """Wait until ``mpiexec`` and every process it started have ended (or
    ``seconds`` pass); return the result, which names any left over."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.popen.poll() is not None and not helper.session_members(process.popen.pid):
            break
        time.sleep(0.02)
    return process.wait()


def one_error_line(result: helper.Result, pattern: str) -> re.Match[str]:
    """Assert that the job printed exactly one error line, matching ``pattern``."""
    assert len(result.error_lines) == 1, result.describe()
    match = re.match(pattern, result.error_lines[0])
    assert match, result.describe()
    return match


def farm_args(tmp_path: Path, *extra: str, tasks: int = 200, n: int = 21) -> list[str]:
    return [
        PROGRAM, "--journal", str(tmp_path / "run.db"), "--count", str(tmp_path / "count"),
        "--tasks", str(tasks), "--n", str(n), *extra,
    ]  # fmt: skip


def test_root_killed_ten_times_then_resume_completes(tmp_path):
    db, count = tmp_path / "run.db", tmp_path / "count"
    args = farm_args(tmp_path, "--resume")
    # Kill moments, in results journaled: at start (the journal just made),
    # then spread over the run; each kill lands wherever the root is, often
    # in the middle of writing a result.
    moments = [0, 10, 30, 50, 75, 100, 125, 150, 170, 190]
    for moment in moments:
        target = max(moment, done_rows(db) + 1) if moment else 0
        # Tasks from a few past the target on never end: the run cannot get
        # past them on any machine, and the kill can still land while the
        # root writes one of the last few results.
        held = [*args, "--hold-from", str(target + IN_FLIGHT)]
        process = helper.start_mpiexec(RANKS, *held, timeout=90)
        if target == 0:
            ready = lambda p=process: db.exists() and 0 in rank_pids(p)  # noqa: E731
        else:
            ready = lambda p=process, t=target: done_rows(db) >= t and 0 in rank_pids(p)  # noqa: E731
        wait_until(process, ready, f"{target} rows")
        os.kill(rank_pids(process)[0], signal.SIGKILL)
        result = process.wait()
        assert result.returncode != 0, result.describe()
        assert "done: verified" not in result.stdout, result.describe()
        assert not result.leftovers, result.describe()
    final = helper.run_mpiexec(RANKS, *args, timeout=90).check(0)
    assert "done: verified 200" in final.stdout
    assert done_rows(db) == 200
    runs = computed(count)
    assert set(runs) == set(range(200))
    assert len(runs) <= 200 + len(moments) * IN_FLIGHT, f"{len(runs)} tasks computed"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_mpiexec_keeps_what_arrived(tmp_path, sig):
    """Open MPI's mpiexec SIGTERMs every rank and SIGKILLs it ~0.25 s later:
    no time for a grace period, but every result that arrived is journaled."""
    db, count = tmp_path / "run.db", tmp_path / "count"
    args = farm_args(tmp_path, "--resume", "--grace", str(GRACE), n=23)
    # Tasks from 60 on never end, so the signal lands mid-run on any machine.
    process = helper.start_mpiexec(RANKS, *args, *HOLD, timeout=90)
    wait_until(process, lambda: done_rows(db) >= 20 and len(rank_pids(process)) == RANKS, "20 rows")
    signalled = time.monotonic()
    os.kill(process.popen.pid, sig)
    result = wait_all_gone(process, GRACE + 5)
    gone = time.monotonic() - signalled
    assert gone <= GRACE + 5, result.describe()
    assert result.returncode != 0 and not result.leftovers, result.describe()
    rows, started = done_rows(db), len(computed(count))
    assert started - IN_FLIGHT <= rows <= started, (rows, started)
    helper.run_mpiexec(RANKS, *args, timeout=90).check(0)
    assert done_rows(db) == 200
    assert len(computed(count)) <= 200 + IN_FLIGHT


@pytest.mark.parametrize(
    "sig, to",
    [
        (signal.SIGTERM, "ranks"),
        (signal.SIGINT, "ranks"),
        (signal.SIGUSR1, "mpiexec"),
        (signal.SIGTERM, "one worker"),
    ],
)
def test_clean_stop(tmp_path, sig, to):
    """A signal that reaches the ranks (as srun and Slurm deliver SIGTERM, or
    SIGUSR1, which mpiexec forwards), or one worker alone: the root waits for
    the chunks in flight, says how many results the journal holds, and every
    rank ends 128+signal."""
    db = tmp_path / "run.db"
    args = farm_args(tmp_path, "--resume", "--grace", str(GRACE), n=23)
    # Tasks from 60 on never end, so the signal lands mid-run on any machine.
    process = helper.start_mpiexec(RANKS, *args, *HOLD, timeout=90)
    wait_until(process, lambda: done_rows(db) >= 20 and len(rank_pids(process)) == RANKS, "20 rows")
    signalled = time.monotonic()
    if to == "ranks":
        for pid in rank_pids(process).values():
            os.kill(pid, sig)
    elif to == "one worker":
        os.kill(rank_pids(process)[1], sig)
    else:
        os.kill(process.popen.pid, sig)
    result = wait_all_gone(process, GRACE + 5)
    assert time.monotonic() - signalled <= GRACE + 5, result.describe()
    assert result.returncode == 128 + sig and not result.leftovers, result.describe()
    name = signal.Signals(sig).name
    pattern = (
        rf"^error: stopped by {name}: (\d+) of 200 results are in "
        rf"{re.escape(str(db))}; rerun with --resume$"
    )
    match = one_error_line(result, pattern)
    assert int(match.group(1)) == done_rows(db) >= 20
    assert "done: verified" not in result.stdout
    helper.run_mpiexec(RANKS, *args, timeout=90).check(0)
    assert done_rows(db) == 200


def test_clean_stop_without_journal_says_what_was_lost(tmp_path):
    count = tmp_path / "count"
    args = [PROGRAM, "--count", str(count), "--grace", str(GRACE), "--n", "23", *HOLD]
    process = helper.start_mpiexec(RANKS, *args, timeout=90)
    wait_until(
        process, lambda: len(computed(count)) >= 20 and len(rank_pids(process)) == RANKS, "20 tasks"
    )
    for pid in rank_pids(process).values():
        os.kill(pid, signal.SIGTERM)
    result = process.wait()
    assert result.returncode == 128 + signal.SIGTERM, result.describe()
    one_error_line(
        result,
        r"^error: stopped by SIGTERM with \d+ of 200 results done, and no journal to keep "
        "them; "
        r"run with --journal PATH to keep them next time$",
    )


def attempts(db: Path) -> list[tuple[int, int, int, int]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(
            "SELECT idx, attempt, ok, rank FROM attempts ORDER BY idx, attempt"
        ).fetchall()
    finally:
        con.close()


def test_retries_run_a_failed_task_again_and_journal_both_attempts(tmp_path):
    (tmp_path / "failed").mkdir()
    args = farm_args(
        tmp_path, "--fail-once", str(tmp_path / "failed"), "--retries", "1", tasks=20, n=15
    )
    result = helper.run_mpiexec(RANKS, *args, timeout=90).check(0)
    assert "done: verified 20" in result.stdout
    rows = attempts(tmp_path / "run.db")
    assert [(i, a, ok) for i, a, ok, _ in rows] == [
        (i, a, ok) for i in range(20) for a, ok in ((1, 0), (2, 1))
    ]
    status = helper.run_python(
        "-m", "ringmpi.fibfarm", "--journal", str(tmp_path / "run.db"), "--status"
    )
    status.check(0)
    assert "done 20, failed 0, missing 0 of 20 tasks (40 attempts)" in status.stdout


def test_without_retries_the_failure_stays_and_resume_reruns_it(tmp_path):
    (tmp_path / "failed").mkdir()
    args = farm_args(
        tmp_path, "--fail-once", str(tmp_path / "failed"), "--errors", "collect", tasks=10, n=15
    )
    result = helper.run_mpiexec(RANKS, *args, timeout=90)
    assert result.returncode != 0 and "done: verified" not in result.stdout, result.describe()
    status = helper.run_python(
        "-m", "ringmpi.fibfarm", "--journal", str(tmp_path / "run.db"), "--status"
    )
    assert "done 0, failed 10, missing 0 of 10 tasks" in status.stdout, status.describe()
    # With errors="collect" a resume keeps the errors; --resume-failed's
    # equivalent (errors="raise" reruns failed tasks) computes them again.
    again = helper.run_mpiexec(RANKS, *args[:-4], "--tasks", "10", "--resume", timeout=90)
    again.check(0)
    assert "done: verified 10" in again.stdout


def refuse(tmp_path, *extra: str) -> helper.Result:
    result = helper.run_mpiexec(RANKS, *farm_args(tmp_path, *extra, tasks=20, n=10), timeout=60)
    assert result.returncode == 1, result.describe()
    assert len(result.error_lines) == 1, result.describe()
    assert "Traceback" not in result.stderr and "done:" not in result.stdout
    assert not computed(tmp_path / "count"), "no task may run"
    return result


def test_refusals_before_any_work(tmp_path):
    db = tmp_path / "run.db"
    helper.run_mpiexec(RANKS, *farm_args(tmp_path, tasks=20, n=10), timeout=60).check(0)
    (tmp_path / "count").unlink()
    assert "already holds a journal (20 of 20 tasks done)" in refuse(tmp_path).error_lines[0]
    other = helper.run_mpiexec(RANKS, *farm_args(tmp_path, "--resume", tasks=21, n=10), timeout=60)
    assert other.returncode == 1 and len(other.error_lines) == 1, other.describe()
    assert "is the journal of another run" in other.error_lines[0]
    assert "over 20 tasks" in other.error_lines[0] and "not " in other.error_lines[0]
    with open(str(db) + "-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert "in use by a live run" in refuse(tmp_path, "--resume").error_lines[0]
    for name in ("run.db-wal", "run.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database " * 100)
    assert "is not a usable journal" in refuse(tmp_path, "--resume").error_lines[0]


def test_a_journal_that_fails_mid_run_ends_the_job_with_one_line(tmp_path):
    """A write that fails mid-run (a full disk, here a trigger that refuses
    every new row) ends the job at once; what was committed before stays,
    and a rerun resumes from it."""
    db, gate = tmp_path / "run.db", tmp_path / "gate"
    args = farm_args(tmp_path, "--resume")
    # Tasks from 20 on wait for the gate: the first 20 results are in the
    # journal before the trigger, and more arrive after it, on any machine.
    held = ["--hold-from", "20", "--hold-until", str(gate)]
    process = helper.start_mpiexec(RANKS, *args, *held, timeout=90)
    wait_until(process, lambda: done_rows(db) >= 20, "20 rows")
    con = sqlite3.connect(db, timeout=5)
    with con:
        con.execute("CREATE TRIGGER refuse BEFORE INSERT ON chunks BEGIN "
                    "SELECT RAISE(ABORT, 'disk says no'); END")  # fmt: skip
    gate.touch()
    result = wait_all_gone(process, 20)
    assert result.returncode == 1 and not result.leftovers, result.describe()
    assert "Traceback" not in result.stderr and "done:" not in result.stdout, result.describe()
    one_error_line(
        result,
        rf"^error: cannot write the journal {re.escape(str(db))}: disk says no "
        r"\(20 results are in it; rerun with --resume once it can be written\)$",
    )
    assert done_rows(db) == 20
    with con:
        con.execute("DROP TRIGGER refuse")
    con.close()
    helper.run_mpiexec(RANKS, *args, timeout=90).check(0)
    assert done_rows(db) == 200


def test_a_killed_root_keeps_what_arrived_whatever_the_chunks(tmp_path):
    """With the farm's own chunk sizes (many tasks a chunk), every result that
    reached the root is in the journal: a worker reports each task as it
    ends, not its whole chunk."""
    db, gate = tmp_path / "run.db", tmp_path / "gate"
    args = farm_args(tmp_path, "--chunksize", "0", n=15)
    # Tasks 0-9 end at once; from 10 on they wait for the gate, so every
    # chunk (about 25 tasks) stays unfinished on any machine.
    process = helper.start_mpiexec(
        RANKS, *args, "--hold-from", "10", "--hold-until", str(gate), timeout=90
    )
    wait_until(process, lambda: done_rows(db) >= 10 and len(rank_pids(process)) == RANKS, "10 rows")
    os.kill(rank_pids(process)[0], signal.SIGKILL)
    result = wait_all_gone(process, 30)
    assert result.returncode != 0 and not result.leftovers, result.describe()
    assert done_rows(db) == 10
    gate.touch()
    helper.run_mpiexec(RANKS, *args, "--resume", timeout=90).check(0)
    assert done_rows(db) == 200
    assert sorted(computed(tmp_path / "count"))[:10] == list(range(10))


def test_a_stop_takes_back_what_has_not_started(tmp_path):
    """SIGINT to every rank with chunks of 100 tasks of 50 ms in flight: the
    root takes back the tasks not started and every rank is gone once the
    running ones end, long before the grace period (or a chunk) is over."""
    db = tmp_path / "run.db"
    args = farm_args(
        tmp_path, "--chunksize", "100", "--sleep", "0.05", "--grace", "60", "--resume",
        tasks=1000, n=10,
    )  # fmt: skip
    process = helper.start_mpiexec(RANKS, *args, timeout=120)
    wait_until(process, lambda: done_rows(db) >= 20 and len(rank_pids(process)) == RANKS, "20 rows")
    signalled = time.monotonic()
    for pid in rank_pids(process).values():
        os.kill(pid, signal.SIGINT)
    result = wait_all_gone(process, 60)
    gone = time.monotonic() - signalled
    assert result.returncode == 128 + signal.SIGINT, result.describe()
    # A chunk takes 5 s; the tasks running at the signal take 50 ms.
    assert gone < 2.5, f"every rank gone {gone:.1f} s after the signal\n{result.describe()}"
    match = one_error_line(result, r"^error: stopped by SIGINT: (\d+) of 1000 results are in ")
    assert int(match.group(1)) == done_rows(db) < 1000
