"""``python -m ringmpi.fibfarm`` under a real ``mpiexec``."""

from __future__ import annotations

import json
import re

import pytest

from ringmpi.fib import fib_exact

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
