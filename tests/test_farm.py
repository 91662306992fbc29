"""Pieces of the farm and of fibfarm that need no MPI world beyond one rank."""

from __future__ import annotations

import io

import pytest

from ringmpi import fib
from ringmpi.farm._outcome import call, describe_error
from ringmpi.farm._plan import balance, make_chunks, plan_workers
from ringmpi.fibfarm import parse_tasks, subtasks
from ringmpi.harness import ProgressBar


def test_fib_matches_exact():
    assert [fib.fib(n) for n in range(1, 25)] == [fib.fib_exact(n) for n in range(1, 25)]
    assert fib.fib_exact(38) == 39088169
    assert fib.fib_exact(93) == 12200160415121876738  # past 64-bit signed


def test_fib_is_the_articles_function():
    # The article's base case: fib(1) = fib(2) = 1 with no further call.
    assert fib.fib(1) == fib.fib(2) == 1
    assert fib.fib(0) == 1  # why n = 0 is refused: the article's function is wrong there


@pytest.mark.parametrize("n", range(1, 26))
def test_calls_counts_the_recursion(n, monkeypatch):
    # Count the calls of ringmpi.fib.fib itself: its recursion goes through the
    # module's global name, which the counter wraps.
    counted = 0
    original = fib.fib

    def counting(k):
        nonlocal counted
        counted += 1
        return original(k)

    monkeypatch.setattr(fib, "fib", counting)
    assert fib.fib(n) == fib.fib_exact(n)
    assert counted == 2 * fib.fib_exact(n) - 1 == fib.calls(n)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 38, 93])
@pytest.mark.parametrize("depth", [0, 1, 2, 5, 10])
def test_split_sums_to_fib(n, depth):
    parts = fib.split(n, depth)
    assert sum(fib.fib_exact(m) for m in parts) == fib.fib_exact(n)
    assert len(parts) <= 2**depth
    assert parts == sorted(parts, reverse=True)
    # Unfolding stops at the article's base case: never below 1.
    assert min(parts) >= 1
    assert sum(fib.calls(m) for m in parts) == fib.calls(n) - (len(parts) - 1)


def test_split_keeps_the_work():
    # Same total calls, less the inner nodes of the unfolded tree.
    parts = fib.split(30, 3)
    assert len(parts) == 8
    assert sum(fib.calls(m) for m in parts) == fib.calls(30) - 7


@pytest.mark.parametrize(
    ("words", "tasks"),
    [
        (["38"], [38]),
        (["30-33"], [30, 31, 32, 33]),
        (["38-33"], [38, 37, 36, 35, 34, 33]),
        (["5", "1-2", "7"], [5, 1, 2, 7]),
        (["3,4"], [3, 4]),
    ],
)
def test_parse_tasks(words, tasks):
    assert parse_tasks(words) == tasks


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["0"], "at least 1"),
        (["-1"], "at least 1"),
        (["2.5"], "invalid task '2.5'"),
        (["abc"], "invalid task 'abc'"),
        ([""], "empty task"),
        (["5-x"], "invalid task"),
        (["0-3"], "at least 1"),
        ([], "no tasks"),
    ],
)
def test_parse_tasks_rejects(words, message):
    with pytest.raises(ValueError, match=message):
        parse_tasks(words)


def test_subtasks_index_back_to_their_task():
    items = subtasks([10, 3], 2)
    assert items == [(0, 8), (0, 7), (0, 7), (0, 6), (1, 2), (1, 1)]


def test_make_chunks_like_pool_without_costs():
    chunks = make_chunks(100, 2)
    assert [len(c) for c in chunks] == [13] * 7 + [9]
    assert sorted(i for c in chunks for i in c) == list(range(100))


def test_make_chunks_with_costs_largest_first_then_smaller():
    costs = [fib.calls(n) for n in [33, 38, 35, 36, 34, 37]]
    chunks = make_chunks(6, 2, costs=costs)
    order = [i for c in chunks for i in c]
    assert order == [1, 5, 3, 2, 4, 0]
    assert all(len(c) == 1 for c in chunks[:2])


def test_make_chunks_guided_shrinks():
    costs = [1.0] * 1000
    chunks = make_chunks(1000, 2, costs=costs)
    sizes = [len(c) for c in chunks]
    assert sizes[0] > sizes[-1]
    assert sum(sizes) == 1000


def test_make_chunks_fixed_size():
    assert make_chunks(5, 2, chunksize=2) == [[0, 1], [2, 3], [4]]


def test_balance_by_cost_is_exact_for_the_article():
    costs = [fib.calls(n) for n in [38, 37, 36, 35, 34, 33]]
    bins = balance(6, 2, costs)
    loads = sorted(sum(costs[i] for i in b) for b in bins)
    assert loads[1] / loads[0] < 1.01


def test_balance_round_robin_without_costs():
    assert balance(5, 2) == [[0, 2, 4], [1, 3]]


@pytest.mark.parametrize(
    ("hosts", "cores", "active", "idle", "root_computes"),
    [
        (["a"], [2], [], [], True),  # -n 1
        (["a", "a"], [2, 2], [1], [], True),  # -n 2 on 2 cores
        (["a", "a", "a"], [2, 2, 2], [1, 2], [], False),  # -n 3 on 2 cores
        (["a"] * 8, [2] * 8, [1, 2], [3, 4, 5, 6, 7], False),  # -n 8 on 2 cores
        # a head with 2 cores and two 2-core workers, 2 ranks each
        (["h", "h", "w1", "w1", "w2", "w2"], [2] * 6, [1, 2, 4, 3, 5], [], True),
    ],
)
def test_plan_workers(hosts, cores, active, idle, root_computes):
    got = plan_workers(hosts, cores, root=0)
    assert (sorted(got[0]), got[1], got[2]) == (sorted(active), idle, root_computes)


def test_plan_workers_spreads_first_chunks_over_hosts():
    active, _, _ = plan_workers(["h", "a", "a", "b", "b"], [1, 2, 2, 2, 2], root=0)
    assert {active[0], active[1]} == {1, 3}


def test_call_catches_exceptions_and_sys_exit():
    assert call(lambda x: x + 1, 1) == (2, None)
    _, exc = call(lambda x: 1 / x, 0)
    assert isinstance(exc, ZeroDivisionError)
    _, exc = call(lambda x: exit(3), 0)
    assert isinstance(exc, SystemExit)


def test_describe_error_names_task_rank_host():
    try:
        raise KeyError("boom")
    except KeyError as exc:
        error = describe_error(exc, 4, (1, "x"), 3, "node7")
    assert str(error) == "task 4 ((1, 'x')) failed on rank 3@node7: KeyError: 'boom'"
    assert "raise KeyError" in error.remote_traceback


def test_progress_bar_closes_when_the_run_fails():
    out = io.StringIO()
    with pytest.raises(RuntimeError), ProgressBar(10, file=out) as bar:
        bar(3, 10)
        raise RuntimeError("the run failed")
    assert bar.bar.disable  # tqdm's sign of a closed bar


def test_progress_bar_redraws_rarely_off_a_terminal():
    out = io.StringIO()
    with ProgressBar(50_000, file=out) as bar:
        for done in range(1, 50_001):
            bar(done, 50_000)
    # One line at the start and at most one per 10 s, not one per task.
    assert out.getvalue().count("\r") < 10


def test_acknowledging_failures_frees_both_groups_it_makes():
    # Every ULFM recovery asks for two groups: neither may be left behind.
    from ringmpi.farm import _ft

    freed = []

    class Group:
        def __init__(self, ranks):
            self.ranks = ranks

        def Get_size(self):
            return len(self.ranks)

        def Translate_ranks(self, ranks, other):
            return [other.ranks.index(self.ranks[r]) for r in ranks]

        def Free(self):
            freed.append(self.ranks)

    class Comm:
        def Ack_failed(self):
            pass

        def Get_failed(self):
            return Group([12, 14])

        def Get_group(self):
            return Group([10, 11, 12, 13, 14])

    assert _ft.acknowledge_failed(Comm()) == [2, 4]
    assert sorted(freed) == [[10, 11, 12, 13, 14], [12, 14]]


def test_error_lines_show_an_executor_call_as_the_call():
    from ringmpi.executor._pool import _map_chunk, _starmap_chunk
    from ringmpi.farm._outcome import short_repr

    assert short_repr((divmod, (7, 2), {})) == "divmod(7, 2)"
    assert short_repr((sorted, ([3, 1],), {"reverse": True})) == "sorted([3, 1], reverse=True)"
    assert short_repr((_map_chunk, (abs, [-3]), {})) == "abs(-3)"
    assert short_repr((_map_chunk, (abs, [-3, 4]), {})) == "abs over [-3, 4]"
    assert short_repr((_starmap_chunk, (divmod, [(7, 2)]), {})) == "divmod(7, 2)"
    # A farm's task that is a tuple of another shape stays its repr.
    assert short_repr((1, 2, 3)) == "(1, 2, 3)"
    assert short_repr((abs, 2, {})) == repr((abs, 2, {}))
    assert short_repr((divmod, ("x" * 100,), {})).endswith("...")
