"""fibfarm's command line in-process: refusals come at once for any input, and the wording."""

from __future__ import annotations

import decimal
import re
import sys
import time

import pytest

from ringmpi import fib as fibmod
from ringmpi import journal as journalmod
from ringmpi.farm import FarmError
from ringmpi.fibfarm import _args as fibargs
from ringmpi.fibfarm import _report as fibreport
from ringmpi.fibfarm import _run as fibfarm
from ringmpi.harness import UsageError
from ringmpi.journal import _status as journalstatus


def power(value: int) -> str:
    """Format an exact int as ``1.23e+45`` from its digits (no float)."""
    digits = str(value)
    mantissa = decimal.Decimal(f"{digits[0]}.{digits[1:8]}").quantize(decimal.Decimal("0.01"))
    exponent = len(digits) - 1
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.2f}e+{exponent:02d}"


@pytest.fixture
def no_big_work(monkeypatch):
    """Make the slow ways of refusing fail: exact huge Fibonacci numbers, and
    building the sub-tasks of a split."""
    exact = fibmod.fib_exact

    def small_exact(n):
        assert n <= 1000, f"fib_exact({n}) computed for a refusal"
        return exact(n)

    def never(*args):
        raise AssertionError("the sub-tasks were built for a refusal")

    monkeypatch.setattr(fibmod, "fib_exact", small_exact)
    monkeypatch.setattr(fibmod, "split", never)
    monkeypatch.setattr(fibfarm, "subtasks", never)


def refusal(argv: list[str]) -> str:
    from mpi4py import MPI  # noqa: F401 - started before the clock: it takes seconds under load

    start = time.perf_counter()
    with pytest.raises(UsageError) as caught:
        fibfarm.main(argv)
    # Instant: tens of microseconds here; the bound only catches real work.
    assert time.perf_counter() - start < 5.0
    return str(caught.value)


#: Exact call counts, computed before any test patches fib_exact.
EXACT_CALLS = {n: fibmod.calls(n) for n in (1500, 10000)}


def estimate_refusal(tasks: list[int]) -> str:
    # Past the recursion limit the depth is refused first; the estimate must
    # still hold for any n (no OverflowError, no exact huge ints).
    with pytest.raises(UsageError) as caught:
        fibargs._check_estimate(tasks)
    return str(caught.value)


@pytest.mark.parametrize(("tasks", "n"), [([1500], 1500), (list(range(1, 10001)), 10000)])
def test_huge_n_is_refused_at_once_with_the_estimate(tasks, n, no_big_work):
    message = estimate_refusal(tasks)
    assert message.startswith(f"fib({n}) by naive recursion makes {power(EXACT_CALLS[n])} calls")
    assert "years of CPU time" in message and message.endswith("pass --force to run them anyway")


def test_astronomical_n_is_refused_at_once(no_big_work):
    # log10 of 2 * phi**n / sqrt(5), to 50 digits.
    decimal.getcontext().prec = 50
    five = decimal.Decimal(5)
    phi = (1 + five.sqrt()) / 2
    log = decimal.Decimal(2).log10() + 100_000_000 * phi.log10() - five.sqrt().log10()
    message = estimate_refusal([100_000_000])
    assert f"e+{int(log)} calls" in message, message
    # Past a float, still one line and no OverflowError.
    message = estimate_refusal([10**400])
    assert "makes more than 1e+308 calls" in message, message


def test_too_many_sub_tasks_are_refused_at_once(no_big_work):
    message = refusal(["38", "--split", "30"])
    count = fibmod.split_count(38, 30)
    assert count > fibargs.MAX_TASKS
    assert message == (
        f"--split 30 makes {count} sub-tasks of 1 task: a run may have at most "
        f"{fibargs.MAX_TASKS}; give a smaller --split"
    )
    # --force lifts the time limit, not this one; 92 > 2 * 30: every branch unfolds.
    message = refusal(["92", "--force", "--split", "30"])
    assert message.startswith(f"--split 30 makes {2**30} sub-tasks of 1 task")


def test_too_many_tasks_in_ranges_are_refused_at_once(no_big_work):
    message = refusal(["1-2000000", "--force"])
    assert (
        message
        == f"range '1-2000000' makes 2000000 tasks: a run may have at most {fibargs.MAX_TASKS}"
    )
    message = refusal(["1-600000", "1-600000", "--force"])
    assert message.startswith("range '1-600000' makes 600000 tasks")


@pytest.mark.parametrize(("n", "depth"), [(n, d) for n in range(1, 30) for d in range(0, 12)])
def test_split_count_is_the_length_of_split(n, depth):
    assert fibmod.split_count(n, depth) == len(fibmod.split(n, depth))


def test_help_names_the_values():
    text = " ".join(fibfarm.build_parser().format_help().split())
    assert "--timeout SECONDS" in text and "TIMEOUT" not in text
    assert "--task-timeout SECONDS" in text
    assert "--chunksize N" in text and "CHUNKSIZE" not in text


def test_report_says_1_rank_and_1_task(capsys):
    # This process is a world of one rank: the root computes.
    assert fibfarm.main(["20", "--baseline", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "fib(20) = 6765" in out
    assert "# 1 task on 1 rank, 1 computing, dynamic" in out
    assert "on 1 computing rank\n" in out
    assert "verified 1 result against exact Fibonacci" in out


def test_largest_split_is_the_largest_of_split():
    for n in range(1, 30):
        for depth in range(0, 12):
            assert fibmod.largest_split(n, depth) == max(fibmod.split(n, depth)), (n, depth)


#: The largest n whose recursion the kernel can run, unsplit.
LARGEST = fibargs.max_depth() + 1
#: What every refusal for depth says about Python's limit.
LIMIT = f"Python's recursion limit ({sys.getrecursionlimit()}, less {fibargs.RECURSION_MARGIN}"


def test_too_deep_a_recursion_is_refused_even_with_force(no_big_work):
    message = refusal(["1500", "--force"])
    assert message == (
        f"fib(1500) by naive recursion nests 1499 calls deep, past {LIMIT} for the frames "
        f"under the kernel): the largest n that can run is {LARGEST}"
    )
    # Without --force too: --force cannot make it run.
    assert refusal(["1500"]) == message
    assert refusal(["800"]).endswith("pass --force to run them anyway")


def test_depth_is_judged_on_the_sub_calls_that_run(no_big_work):
    message = refusal(["30", "1500", "--force", "--split", "3"])
    assert message.startswith(
        "fib(1500) with --split 3 runs fib(1497), which by naive recursion nests 1496 calls deep"
    )
    assert message.endswith(f"the largest n that can run is {LARGEST + 3} with --split 3")
    # The sequential --baseline runs each fib(n) whole.
    message = refusal(["1500", "--force", "--split", "3", "--baseline"])
    assert message.startswith("fib(1500) by naive recursion nests 1499 calls deep")
    assert message.endswith(f"is {LARGEST} (--baseline runs each fib(n) whole)")


@pytest.mark.parametrize(
    ("n", "extra"),
    [(LARGEST, []), (LARGEST + 5, ["--split", "5"]), (LARGEST, ["--split", "5", "--baseline"])],
)
def test_the_largest_n_is_not_refused_and_one_more_is(n, extra):
    args = fibfarm.build_parser().parse_args([str(n), "--force", *extra])
    assert fibargs.checked_tasks(args) == [n]
    args = fibfarm.build_parser().parse_args([str(n + 1), "--force", *extra])
    with pytest.raises(UsageError, match=rf"the largest n that can run is {n}\b"):
        fibargs.checked_tasks(args)


def failing_fib_of(item: tuple[int, int]) -> int:
    if item[1] == 19:
        raise ZeroDivisionError("nineteen")
    return fibmod.fib(item[1])


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["20", "19", "18"], "task 1 (fib(19))"),
        (["20", "--split", "1"], "task 0 (fib(19) of fib(20))"),
    ],
)
def test_a_failed_task_is_named_as_the_user_knows_it(monkeypatch, argv, name):
    monkeypatch.setattr(fibfarm, "fib_of", failing_fib_of)
    with pytest.raises(FarmError) as caught:
        fibfarm.main(argv)
    assert re.fullmatch(
        rf"{re.escape(name)} failed on rank 0@\S+: ZeroDivisionError: nineteen", str(caught.value)
    )
    # Still typed as the task's exception, with it as the cause.
    assert isinstance(caught.value, ZeroDivisionError)
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_status_names_fibfarm_tasks_as_fib_n():
    def summary(function: str) -> journalstatus.Summary:
        identity = journalmod.Identity(function, 3, "0" * 64)
        return journalstatus.Summary(
            identity, 1, 1, 2, [(2, "(1, 30)", 1.5, "1@node7")], [(0, "(0, 1497)", "Boom: no")]
        )

    text = fibreport.format_status("run.db", summary("ringmpi.fibfarm.fib_of"))
    assert "failed: task 0 (fib(1497)): Boom: no" in text
    assert text.splitlines()[3].endswith("1@node7              fib(30)")
    # Another program's journal keeps its tasks as they were recorded.
    text = fibreport.format_status("run.db", summary("tests.other.work"))
    assert "failed: task 0 ((0, 1497)): Boom: no" in text
