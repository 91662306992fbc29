"""The engine's promises, end to end under mpiexec: per-task reports, work taken back.

Each case runs tests/programs/engine_cases.py at -n 3 (two workers on two
cores). Its tasks hold until the program releases them, so what a case sees
is decided by the engine, not by the machine's speed.
"""

from __future__ import annotations

import re
from pathlib import Path

import mpirun as helper
import pytest

PROGRAM = str(Path(__file__).parent / "programs" / "engine_cases.py")


def run_case(tmp_path: Path, mode: str, timeout: float = 120) -> helper.Result:
    return helper.run_mpiexec(3, PROGRAM, mode, str(tmp_path), timeout=timeout)


def test_tiny_tasks_do_not_wait_behind_a_long_one(tmp_path):
    result = run_case(tmp_path, "head-of-line").check(0)
    assert "tiny done: 400 of 400 while the long task ran: True" in result.stdout


def test_a_future_is_running_only_once_its_task_started(tmp_path):
    result = run_case(tmp_path, "running").check(0)
    assert "running at most: 2 of 40" in result.stdout


def test_shutdown_cancels_every_task_not_started(tmp_path):
    result = run_case(tmp_path, "cancel").check(0)
    assert "cancelled: 38 of 40, ran: 2" in result.stdout


def test_as_completed_sees_each_task_as_it_ends(tmp_path):
    result = run_case(tmp_path, "as-completed").check(0)
    assert "in order: True, chunks: True, elapsed: True" in result.stdout


def test_a_stopped_worker_holding_many_tasks_times_out_on_its_task(tmp_path):
    result = run_case(tmp_path, "timeout-stopped", timeout=200)
    assert result.returncode != 0, result.describe()
    match = re.search(r"failed with (\w+) after ([\d.]+) s", result.stdout)
    assert match and match.group(1) == "FarmTimeout", result.describe()
    # The limit is 2 s a task; the worker held hundreds of tasks.
    assert float(match.group(2)) < 30, result.describe()
    assert any("past the limit of 2 s per task" in line for line in result.error_lines)


@pytest.mark.parametrize("mode", ["endless", "endless-executor"])
def test_endless_iterators_are_read_as_the_workers_need_them(tmp_path, mode):
    result = run_case(tmp_path, mode).check(0)
    assert "False" not in result.stdout and "True" in result.stdout, result.describe()


def test_terminate_cancels_what_has_not_started(tmp_path):
    result = run_case(tmp_path, "terminate").check(0)
    match = re.search(r"terminated in ([\d.]+) s, ran: (\d+), ready: True", result.stdout)
    assert match, result.describe()
    # Two tasks were running and released; the other 198 never start.
    assert int(match.group(2)) == 2 and float(match.group(1)) < 10, result.describe()


def test_results_that_fail_to_unpickle_on_the_root_fail_alone_in_a_shared_report(tmp_path):
    # Instant tasks of one chunk on one worker: their results come in one
    # report; three of them cannot be unpickled on the root (a reduce that
    # raises ValueError or KeyboardInterrupt, a class the root lacks).
    result = helper.run_mpiexec(2, PROGRAM, "one-report", str(tmp_path), timeout=60).check(0)
    line = "innocent: 9 of 9, bad failed: 3 of 3, one line: True, named: True"
    assert line in result.stdout, result.describe()


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("mode", ["pickling", "pickling-farm"])
def test_pickling_that_raises_anything_fails_that_task_alone(tmp_path, mode, n):
    # Arguments and results whose pickling or unpickling raises ValueError,
    # ZeroDivisionError, RuntimeError or SystemExit, on the root or a worker.
    result = helper.run_mpiexec(n, PROGRAM, mode, str(tmp_path), timeout=90).check(0)
    match = re.search(
        r"innocent: (\d+) of (\d+), bad failed: (\d+) of (\d+), one line: True", result.stdout
    )
    assert match, result.describe()
    assert match.group(1) == match.group(2) and match.group(3) == match.group(4), result.describe()
    assert "after: 144" in result.stdout or "typed: True" in result.stdout, result.describe()


HOSTILE = str(Path(__file__).parent / "programs" / "hostile_exec.py")


def run_hostile(n: int, mode: str, *args: str, timeout: float = 60) -> helper.Result:
    return helper.run_mpiexec(n, HOSTILE, mode, *args, timeout=timeout)


@pytest.mark.parametrize("n", [1, 3])
def test_a_blocking_done_callback_does_not_stop_the_executor(n):
    result = run_hostile(n, "blocking-callback").check(0)
    assert "later done: 20 of 20, callback got: [81]" in result.stdout, result.describe()


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("mode", ["no-with", "no-with-nowait"])
def test_leaving_without_shutdown_finishes_pending_tasks(tmp_path, n, mode):
    out = tmp_path / "written"
    result = run_hostile(n, mode, str(out), timeout=30).check(0)
    assert "root leaves" in result.stdout
    assert out.read_text() == "done\n", result.describe()


@pytest.mark.parametrize("n", [1, 3])
def test_a_failing_initializer_breaks_the_executor(n):
    result = run_hostile(n, "initializer").check(0)
    assert "pending broken: True ['BrokenExecutor'], later submit: BrokenExecutor" in (
        result.stdout
    ), result.describe()
    assert "ValueError: no licence server on rank" in result.stdout


@pytest.mark.parametrize("n", [1, 3])
def test_a_broken_executor_fails_every_pending_future_and_the_job_ends(n):
    result = run_hostile(n, "broken", timeout=40)
    assert result.returncode != 0, result.describe()
    line = "all done: True, failed: True, broken: True, later submit: BrokenExecutor"
    assert line in result.stdout, result.describe()


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("mode", ["pool-timeout", "farm-timeout"])
def test_task_timeout_without_launch_ends_the_job(n, mode):
    result = run_hostile(n, mode, timeout=40)
    assert "map raised FarmTimeout" in result.stdout, result.describe()
    if mode == "farm-timeout":  # when the program ends, not at once
        assert "the script goes on" in result.stdout, result.describe()
        if n == 1:  # the root's late task runs on a daemon thread: nothing hangs
            assert result.returncode == 0, result.describe()
            return
    assert result.returncode != 0, result.describe()
    assert any(
        "the farm's workers cannot be released" in line and "past the limit of 2 s" in line
        for line in result.error_lines
    ), result.describe()


@pytest.mark.parametrize("how", ["farm", "executor"])
def test_a_worker_lost_under_ulfm_without_fault_tolerance_ends_the_job_with_one_line(how):
    result = helper.run_mpiexec(
        3, HOSTILE, "lost-not-ft", how, timeout=60, mpiexec_args=["--with-ft", "ulfm"]
    )
    assert result.returncode != 0, result.describe()
    assert len(result.error_lines) == 1, result.describe()
    assert re.match(
        r"error: the farm lost rank 2@\S+ \(it died\): MPI reports .*fault_tolerant=True",
        result.error_lines[0],
    ), result.describe()
    assert "Traceback" not in result.stderr, result.describe()


def test_pool_refuses_a_bad_chunksize_and_has_sizes():
    result = run_hostile(3, "chunksize").check(0)
    assert "['ValueError'], size: True" in result.stdout, result.describe()


@pytest.mark.parametrize(
    ("mode", "name"), [("pool", "log_prob"), ("executor", "Point"), ("farm", "root_only")]
)
def test_a_function_missing_on_the_workers_fails_its_tasks_with_the_fix(mode, name):
    program = str(Path(__file__).parent / "programs" / "late_function.py")
    result = helper.run_mpiexec(3, program, mode, timeout=60).check(0)
    said = [line for line in result.stdout_lines if line.startswith("raised")]
    assert len(said) == 1, result.describe()
    assert f"Can't get attribute '{name}'" in said[0]
    assert f"define {name} at module level" in said[0]
    assert "Traceback" not in result.stderr, result.describe()
    if mode != "farm":
        assert "after: " in result.stdout  # the farm goes on


@pytest.mark.parametrize("n", [1, 3])
def test_misuse_is_refused_at_once_with_one_line(n):
    result = run_hostile(n, "misuse").check(0)
    arguments = (
        "['(root computes)']" if n == 1 else "['TypeError: one line', 'ValueError: one line']"
    )
    line = f"refused: ['ValueError'], lambda: [True, True], as arguments: {arguments}, after: 25"
    assert line in result.stdout, result.describe()


@pytest.mark.parametrize("n", [1, 3])
def test_an_executor_used_without_with_says_so_once(n):
    result = run_hostile(n, "no-with-submit", timeout=30)
    assert result.returncode != 0, result.describe()
    assert result.error_lines == [
        "error: use the executor inside 'with FarmExecutor(...) as ex:' on every rank, "
        "and only the root's ex (the others get None)"
    ], result.describe()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("n", [1, 3])
def test_a_plain_script_that_uses_an_executor_without_with_gets_one_line(n):
    result = run_hostile(n, "no-with-map", timeout=30)
    assert result.returncode != 0, result.describe()
    lines = Path(HOSTILE).read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.endswith("# the line named"))
    assert result.error_lines == [
        "error: use the executor inside 'with FarmExecutor(...) as ex:' on every rank, "
        f"and only the root's ex (the others get None) ({HOSTILE}, line {line})"
    ], result.describe()
    assert "Traceback" not in result.stderr


PLAIN = """
from ringmpi import {cls}

def square(x):
    return x * x

if __name__ == "__main__":
    with {cls}() as {name}:
        print(sum({name}.map(square, range(100))))
"""


@pytest.mark.parametrize(("cls", "name"), [("FarmExecutor", "ex"), ("FarmPool", "pool")])
def test_a_plain_script_run_without_ringmpi_run_says_how_once(tmp_path, cls, name):
    # The workers get None and die of it: one traceback and one line with
    # the fix, from one worker, not the same from every rank.
    script = tmp_path / "plain.py"
    script.write_text(PLAIN.format(cls=cls, name=name))
    result = helper.run_mpiexec(4, str(script), timeout=60)
    assert result.returncode != 0, result.describe()
    assert "328350" in result.stdout, result.describe()  # the root's answer
    assert result.stderr.count("Traceback") == 1, result.describe()
    assert result.error_lines == [
        f"error: {cls}() gives None on every rank but the root, whose {name} it is: use it "
        f"under 'if {name} is not None:', or run the script with 'mpiexec -n N python -m "
        "ringmpi.run plain.py', where it runs on the root alone"
    ], result.describe()


@pytest.mark.parametrize("n", [1, 3])
def test_a_task_generator_that_raises_on_the_root_releases_the_workers_at_once(n):
    result = helper.run_mpiexec(
        n, HOSTILE, "generator", timeout=60, env={"RINGMPI_JOIN_TIMEOUT": "20"}
    ).check(0)
    line = "raised OSError: the input file went away, every rank out within 5 s: True"
    assert f"{line}, next farm: [1, 4]" in result.stdout, result.describe()
