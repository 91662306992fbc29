"""``python -m ringmpi.fibfarm`` under a real ``mpiexec``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from trace_check import check_chrome_trace

from ringmpi.fib import fib_exact
from ringmpi.fibfarm import subtasks
from ringmpi.fibfarm._args import max_depth
from ringmpi.harness import UsageError

ARTICLE = [38, 37, 36, 35, 34, 33]
ARTICLE_LINES = [f"fib({n}) = {fib_exact(n)}" for n in ARTICLE]


def result_lines(result):
    return [line for line in result.stdout_lines if line.startswith("fib(")]


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
    ("n", "extra"),
    [(1, []), (3, []), (8, []), (3, ["--schedule", "static"]), (3, ["--split", "3"])],
)
def test_trace_and_timeline(mpirun, tmp_path, n, extra):
    trace, png = tmp_path / "run.json", tmp_path / "run.png"
    result = mpirun(
        n,
        *["-m", "ringmpi.fibfarm", "24-19", "--json", "--verify"],
        *["--trace", str(trace), "--timeline", str(png), *extra],
        timeout=120,
    ).check(0)
    doc = json.loads(result.stdout)
    items = len(subtasks(list(range(24, 18, -1)), int(extra[1]) if "--split" in extra else 0))
    check_chrome_trace(json.loads(trace.read_text()), items, n, doc["elapsed"])
    spans = [e for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"]
    assert all(re.fullmatch(r"fib\(\d+\)", e["name"]) for e in spans)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_timeline_without_matplotlib_is_refused_before_any_work(monkeypatch, capsys):
    from ringmpi import fibfarm
    from ringmpi.farm import timeline as trace

    monkeypatch.setattr(trace, "have_matplotlib", lambda: False)
    with pytest.raises(UsageError, match=r"--timeline needs matplotlib: pip install"):
        fibfarm.main(["30", "--timeline", "x.png"])


#: fibfarm whose tasks hold until HOLD_DIR/release exists (see the program).
HELD = str(Path(__file__).parent / "programs" / "held_fibfarm.py")


@pytest.mark.parametrize("n", [1, 2])
def test_too_deep_a_recursion_is_refused_before_any_work(mpirun, n):
    result = mpirun(n, "-m", "ringmpi.fibfarm", "1500", "--force", timeout=60).check(2)
    assert len(result.error_lines) == 1, result.describe()
    assert result.error_lines[0].startswith(
        "error: fib(1500) by naive recursion nests 1499 calls deep, past Python's recursion limit"
    ), result.describe()
    assert "RecursionError" not in result.stderr and not result_lines(result)


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_the_largest_n_that_can_run_recurses_without_error(mpirun, schedule):
    # It never finishes: the deepest nesting comes within the first calls,
    # so a --timeout that ends it shows that no task failed before.
    n = str(max_depth() + 1)
    result = mpirun(
        2, "-m", "ringmpi.fibfarm", n, n, "--force", "--schedule", schedule, "--timeout", "3"
    )
    assert "fibfarm did not finish within 3 s" in result.stderr, result.describe()
    assert "RecursionError" not in result.stderr and "failed" not in result.stderr


def test_a_task_past_its_time_limit_is_named_as_the_user_knows_it(mpirun, tmp_path):
    result = mpirun(2, HELD, str(tmp_path), "20", "--split", "1", "--task-timeout", "1", timeout=60)
    assert re.search(
        r"^error: rank \d@\S+ has run task\(s\) [01] \(fib\(1[89]\) of fib\(20\)\)[ ,]",
        result.stderr,
        re.MULTILINE,
    ), result.describe()
    assert "((" not in result.stderr


def test_memory_limit_is_passed_to_the_farm_and_refused_without_room(mpirun):
    fine = mpirun(3, "-m", "ringmpi.fibfarm", "20-22", "--memory-limit", "2G", timeout=60)
    assert "fib(22) = 17711" in fine.check(0).stdout
    tight = mpirun(3, "-m", "ringmpi.fibfarm", "20-22", "--memory-limit", "20M", timeout=60)
    assert tight.returncode == 2, tight.describe()
    assert len(tight.error_lines) == 1 and "leaves no room for a task" in tight.error_lines[0]
