"""``python -m ringmpi.run``: a plain concurrent.futures script on rank 0, the others serving."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ringmpi.run import parse

PROGRAMS = Path(__file__).parent / "programs"
SCRIPT = str(PROGRAMS / "plain_script.py")
sys.path.insert(0, str(PROGRAMS))


def serial():
    """What the script computes, worked out here without MPI."""
    return {"squares": [x * x for x in range(50)], "points": [x + 0.5 for x in range(10)]}


def results(result):
    lines = [line for line in result.stdout_lines if line.startswith("{")]
    assert len(lines) == 1, result.describe()
    return json.loads(lines[0])


def runs_of_main(out: Path) -> list[str]:
    return out.read_text().splitlines()


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("mode", ["ok", "pool", "again"])
def test_a_plain_script_gives_the_serial_result_and_runs_once(mpirun, tmp_path, n, mode):
    out = tmp_path / "runs"
    result = mpirun(n, "-m", "ringmpi.run", SCRIPT, str(out), mode, timeout=90).check(0)
    assert results(result) == serial()
    assert len(runs_of_main(out)) == 1
    assert runs_of_main(out)[0].endswith(f"['{out}', '{mode}']")  # sys.argv as given
    imported = (tmp_path / "runs.imported").read_text().splitlines()
    # The root ran it as __main__; each worker imported it, as __worker__.
    assert sorted(line.split()[0] for line in imported) == ["__main__"] + ["__worker__"] * (n - 1)
    assert result.stderr.strip() == "" or "error" not in result.stderr.lower(), result.describe()


@pytest.mark.parametrize("n", [1, 3])
def test_the_scripts_exit_status_is_the_jobs(mpirun, tmp_path, n):
    out = tmp_path / "runs"
    result = mpirun(n, "-m", "ringmpi.run", SCRIPT, str(out), "exit=7", timeout=90)
    assert result.returncode == 7, result.describe()
    assert results(result) == serial()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("n", [1, 3])
def test_an_uncaught_exception_prints_its_traceback_once(mpirun, tmp_path, n):
    out = tmp_path / "runs"
    result = mpirun(n, "-m", "ringmpi.run", SCRIPT, str(out), "raise", timeout=90)
    assert result.returncode == 1, result.describe()
    assert result.stderr.count("LookupError: the script's own error") == 1, result.describe()
    assert result.stderr.count("Traceback (most recent call last)") == 1
    # From the script's own frames: not runpy's, not ringmpi's.
    assert "runpy" not in result.stderr and "ringmpi/run" not in result.stderr
    assert len(runs_of_main(out)) == 1


def test_a_module_runs_as_with_python_dash_m(mpirun, tmp_path):
    out = tmp_path / "runs"
    env = {"PYTHONPATH": str(PROGRAMS)}
    result = mpirun(3, "-m", "ringmpi.run", "-m", "plain_script", str(out), timeout=90, env=env)
    assert results(result.check(0)) == serial()
    assert len(runs_of_main(out)) == 1


def test_a_script_that_creates_an_executor_at_its_top_level_is_one_error_line(mpirun, tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from ringmpi import FarmExecutor\n"
        "with FarmExecutor() as ex:\n"
        "    print(ex.submit(abs, -3).result())\n"
    )
    result = mpirun(3, "-m", "ringmpi.run", str(script), timeout=90)
    assert result.returncode == 1, result.describe()
    errors = result.error_lines
    assert len(errors) == 1, result.describe()
    assert "at its top level" in errors[0] and "__name__" in errors[0]
    assert "Traceback" not in result.stderr


def test_two_executors_at_once_are_refused_with_a_clear_message(mpirun, tmp_path):
    script = tmp_path / "two.py"
    script.write_text(
        "from ringmpi import FarmExecutor\n"
        "if __name__ == '__main__':\n"
        "    a = FarmExecutor()\n"
        "    print(a.submit(abs, -1).result(), flush=True)\n"
        "    b = FarmExecutor()\n"
        "    b.submit(abs, -2)\n"
    )
    result = mpirun(3, "-m", "ringmpi.run", str(script), timeout=90)
    assert result.returncode == 1, result.describe()
    assert result.stdout_lines == ["1"]
    assert "one FarmExecutor or FarmPool holds the workers at a time" in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give a script to run, or -m module"),
        (["no-such-script.py"], "no such script: no-such-script.py"),
        (["--bogus", "x.py"], "unrecognized arguments: --bogus"),
        (["-m"], "expected one argument"),
    ],
)
def test_bad_usage_is_one_line_from_one_rank(mpirun, argv, message):
    result = mpirun(2, "-m", "ringmpi.run", *argv, timeout=60)
    assert result.returncode == 2, result.describe()
    assert len(result.error_lines) == 1 and message in result.error_lines[0], result.describe()


def test_the_command_line_keeps_the_scripts_own_arguments(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("")
    target = parse([str(script), "-m", "--help", "x"])
    assert (target.path, target.module, target.argv) == (
        str(script),
        None,
        [str(script), "-m", "--help", "x"],
    )
    target = parse(["-m", "json.tool", "--sort-keys"])
    assert (target.path, target.module, target.argv) == (
        None,
        "json.tool",
        ["json.tool", "--sort-keys"],
    )


def test_ringmpi_run_is_the_same_program(mpirun, tmp_path):
    out = tmp_path / "runs"
    ringmpi = str(Path(sys.executable).with_name("ringmpi"))
    result = mpirun(2, "-m", "ringmpi", "run", SCRIPT, str(out), timeout=90)
    assert results(result.check(0)) == serial()
    assert Path(ringmpi).exists()


def test_a_farm_over_the_world_in_a_script_is_refused_at_once(mpirun, tmp_path):
    script = tmp_path / "farm.py"
    script.write_text(
        "from mpi4py import MPI\n"
        "from ringmpi.farm import farm_map\n"
        "if __name__ == '__main__':\n"
        "    print(farm_map(MPI.COMM_WORLD, abs, [-1, -2]))\n"
    )
    result = mpirun(3, "-m", "ringmpi.run", str(script), timeout=60)
    assert result.returncode == 2, result.describe()
    assert len(result.error_lines) == 1 and "use FarmExecutor or FarmPool" in result.error_lines[0]
    assert result.elapsed < 30  # not the join timeout


def test_a_bad_option_leaves_the_workers_free_for_the_next_executor(mpirun, tmp_path):
    script = tmp_path / "bad.py"
    script.write_text(
        "from ringmpi import FarmExecutor, FarmPool\n"
        "if __name__ == '__main__':\n"
        "    for bad in ({'task_timeout': -1}, {'memory_limit': 'lots'}):\n"
        "        try:\n"
        "            FarmExecutor(**bad).submit(abs, -1)\n"
        "        except ValueError as exc:\n"
        "            print('refused:', exc, flush=True)\n"
        "    try:\n"
        "        FarmPool(memory_limit='1M')\n"
        "    except Exception as exc:\n"
        "        print('refused:', type(exc).__name__, flush=True)\n"
        "    for make in (FarmPool, FarmExecutor):\n"
        "        try:\n"
        "            make(initializer=123)\n"
        "        except TypeError as exc:\n"
        "            print('refused:', exc, flush=True)\n"
        "    with FarmExecutor() as ex:\n"
        "        print(ex.submit(abs, -5).result(), flush=True)\n"
    )
    result = mpirun(3, "-m", "ringmpi.run", str(script), timeout=60).check(0)
    assert result.stdout_lines[-1] == "5", result.describe()
    assert len([line for line in result.stdout_lines if line.startswith("refused:")]) == 5
    assert "FarmUsageError" in result.stdout
    assert result.elapsed < 30


def test_habits_from_concurrent_futures_and_multiprocessing(mpirun, tmp_path):
    # The script owns logging; shut down before its first task, an executor
    # refuses work; one dropped without shutdown (or a pool without close)
    # lets the next have the workers once its tasks are done.
    script = tmp_path / "habits.py"
    script.write_text(
        "import gc, logging, sys\n"
        "from ringmpi import FarmExecutor, FarmPool\n"
        "if __name__ == '__main__':\n"
        "    logging.basicConfig(format='MINE %(message)s', stream=sys.stdout,"
        " level=logging.INFO)\n"
        "    logging.getLogger('science').info('hello')\n"
        "    ex = FarmExecutor()\n"
        "    ex.shutdown()\n"
        "    try:\n"
        "        ex.submit(abs, -1)\n"
        "    except RuntimeError as exc:\n"
        "        print('refused:', exc, flush=True)\n"
        "    ex = FarmExecutor()\n"
        "    print(ex.submit(abs, -1).result(), flush=True)\n"
        "    del ex\n"
        "    gc.collect()\n"
        "    pool = FarmPool()\n"
        "    print(pool.map(abs, [-2, -3]), flush=True)\n"
        "    del pool\n"
        "    gc.collect()\n"
        "    print(FarmExecutor().submit(abs, -4).result(), flush=True)\n"
    )
    result = mpirun(3, "-m", "ringmpi.run", str(script), timeout=90).check(0)
    assert result.stdout_lines == [
        "MINE hello",
        "refused: cannot schedule new futures after shutdown",
        "1",
        "[2, 3]",
        "4",
    ], result.describe()


@pytest.mark.parametrize("how", ["script", "module"])
def test_an_executor_left_open_runs_its_tasks_after_the_script_ends(mpirun, tmp_path, how):
    # The second task waits behind the first, which waits for the script's
    # last line: it is sent, so pickled, after the script has ended, when its
    # function must still be found as __main__.mark.
    script = tmp_path / "left_open.py"
    script.write_text(
        "import os, time\n"
        "from ringmpi import FarmExecutor\n"
        "def gate(path):\n"
        "    while not os.path.exists(path):\n"
        "        time.sleep(0.01)\n"
        "def mark(path):\n"
        "    open(path, 'w').close()\n"
        "if __name__ == '__main__':\n"
        "    import sys\n"
        "    ended, marked = sys.argv[1], sys.argv[2]\n"
        "    ex = FarmExecutor()\n"
        "    ex.submit(gate, ended)\n"
        "    ex.submit(mark, marked).add_done_callback(\n"
        "        lambda f: print('outcome:', f.exception(), flush=True))\n"
        "    open(ended, 'w').close()\n"
    )
    target = [str(script)] if how == "script" else ["-m", "left_open"]
    ended, marked = tmp_path / "ended", tmp_path / "marked"
    env = {"PYTHONPATH": str(tmp_path)}
    result = mpirun(2, "-m", "ringmpi.run", *target, str(ended), str(marked), timeout=90, env=env)
    result.check(0)
    assert marked.exists(), result.describe()
    assert "outcome: None" in result.stdout, result.describe()
