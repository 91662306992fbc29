"""The task farm on real communicators: the world, COMM_SELF and sub-communicators."""

from __future__ import annotations

import os
import threading

import pytest
from trace_check import check_spans

from ringmpi import fib
from ringmpi.farm import (
    Farm,
    FarmError,
    RemoteTraceback,
    TaskError,
    farm_imap_unordered,
    farm_map,
)

pytestmark = pytest.mark.mpi

_STATE = {"initialised": None}


def square(x):
    return x * x


def fails_on_three(x):
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def exits_on_two(x):
    if x == 2:
        raise SystemExit(0)
    return x


def unpicklable_on_one(x):
    return (lambda: x) if x == 1 else x


def a_lock(_x):
    return threading.Lock()


def remember(value):
    _STATE["initialised"] = value


def with_state(x):
    return (_STATE["initialised"], x)


def whoami(_x):
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank(), os.getpid()


def _check(comm, results, expected):
    if comm.Get_rank() == 0:
        assert results == expected
    else:
        assert results is None


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
@pytest.mark.parametrize("ntasks", [0, 1, 7, 100])
def test_results_in_input_order(comm, collectively, schedule, ntasks):
    with collectively:
        tasks = list(range(ntasks))[::-1] if comm.Get_rank() == 0 else None
        results = farm_map(comm, square, tasks, schedule=schedule)
        _check(comm, results, [t * t for t in range(ntasks)][::-1])


@pytest.mark.parametrize("chunksize", [1, 3, 1000])
def test_chunksize(comm, collectively, chunksize):
    with collectively:
        farm = Farm(comm, square, chunksize=chunksize)
        results = farm.map(range(50))
        _check(comm, results, [t * t for t in range(50)])
        if comm.Get_rank() == 0:
            assert farm.stats.chunks == -(-50 // chunksize)
            assert sum(w.tasks for w in farm.stats.workers) == 50


def test_cost_puts_largest_first_and_keeps_order(comm, collectively):
    with collectively:
        tasks = [20, 5, 22, 1, 18, 9]
        results = farm_map(comm, fib.fib, tasks, cost=fib.calls)
        _check(comm, results, [fib.fib_exact(n) for n in tasks])


def test_fn_comes_from_the_root(comm, collectively):
    with collectively:
        fn = square if comm.Get_rank() == 0 else None
        results = farm_map(comm, fn, [1, 2, 3])
        _check(comm, results, [1, 4, 9])


def test_unordered_yields_every_result_once(comm, collectively):
    with collectively:
        got = list(farm_imap_unordered(comm, square, range(30), chunksize=2))
        if comm.Get_rank() == 0:
            assert sorted(got) == [(i, i * i) for i in range(30)]
        else:
            assert got == []


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_initializer_runs_on_every_computing_rank(comm, collectively, schedule):
    with collectively:
        _STATE["initialised"] = None
        results = farm_map(
            comm,
            with_state,
            range(20),
            initializer=remember,
            initargs=("ready",),
            schedule=schedule,
        )
        _check(comm, results, [("ready", i) for i in range(20)])


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_error_raises_on_root_with_remote_details(comm, collectively, schedule):
    with collectively:
        if comm.Get_rank() == 0:
            with pytest.raises(FarmError) as info:
                farm_map(comm, fails_on_three, range(10), schedule=schedule, chunksize=1)
            error = info.value.errors[0]
            assert isinstance(error, TaskError)
            assert error.index == 3 and error.task == "3"
            assert "ValueError: three is not allowed" in str(info.value)
            assert f"@{error.host}" in str(info.value)
            assert "fails_on_three" in error.remote_traceback
        else:
            assert farm_map(comm, fails_on_three, None, schedule=schedule, chunksize=1) is None


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_errors_collected_and_other_tasks_finished(comm, collectively, schedule):
    with collectively:
        farm = Farm(comm, fails_on_three, errors="collect", schedule=schedule, chunksize=2)
        results = farm.map(range(8))
        if comm.Get_rank() == 0:
            assert [r for i, r in enumerate(results) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
            assert isinstance(results[3], TaskError)
            assert len(farm.stats.errors) == 1


def test_sys_exit_in_a_task_is_a_task_error(comm, collectively):
    with collectively:
        results = farm_map(comm, exits_on_two, range(5), errors="collect")
        if comm.Get_rank() == 0:
            assert isinstance(results[2], TaskError)
            assert "SystemExit" in str(results[2])
            assert results[:2] + results[3:] == [0, 1, 3, 4]


def test_unpicklable_result_is_a_task_error(comm, collectively):
    with collectively:
        results = farm_map(comm, unpicklable_on_one, range(4), errors="collect", chunksize=1)
        if comm.Get_rank() == 0:
            # The same at every size, also where the root computes the task.
            assert [results[i] for i in (0, 2, 3)] == [0, 2, 3]
            assert isinstance(results[1], TaskError)
            assert "could not be pickled" in str(results[1])


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_unpicklable_result_names_its_task(comm, collectively, schedule):
    tasks = [f"task-{i}-" + "x" * 100 for i in range(3)]
    with collectively:
        results = farm_map(comm, a_lock, tasks, errors="collect", schedule=schedule)
        if comm.Get_rank() == 0:
            for index, (task, error) in enumerate(zip(tasks, results)):
                assert isinstance(error, TaskError)
                assert error.task == repr(task)[:77] + "..."
                assert str(error).startswith(f"task {index} ({error.task}) failed on rank ")
                assert "the result could not be pickled" in str(error)


def test_more_workers_than_tasks(comm, collectively):
    with collectively:
        results = farm_map(comm, square, [4])
        _check(comm, results, [16])


def test_cores_limit_the_computing_ranks(comm, collectively):
    with collectively:
        farm = Farm(comm, whoami, cores=1, chunksize=1)
        results = farm.map(range(12))
        if comm.Get_rank() == 0:
            size = comm.Get_size()
            computing = {w.rank for w in farm.stats.workers}
            if size == 1:
                assert computing == {0}
            elif size == 2:
                # One core: the worker computes, the root only hands out.
                assert computing == {1} and not farm.stats.root_computes
            assert len(results) == 12
            assert farm.stats.idle_ranks == [
                r for r in range(size) if r not in computing and r != 0
            ]


def test_split_tasks_sum_to_fib(comm, collectively):
    with collectively:
        items = [(i, m) for i, n in enumerate([25, 20]) for m in fib.split(n, 4)]
        values = farm_map(comm, fib.fib, [m for _, m in items], cost=fib.calls)
        if comm.Get_rank() == 0:
            sums = [0, 0]
            for (i, _), v in zip(items, values):
                sums[i] += v
            assert sums == [fib.fib_exact(25), fib.fib_exact(20)]


def test_fault_tolerant_option_without_ulfm_still_computes(comm, collectively):
    with collectively:
        results = farm_map(comm, square, range(9), fault_tolerant=True)
        _check(comm, results, [i * i for i in range(9)])


def test_farm_leaves_the_callers_messages_alone(comm, collectively):
    with collectively:
        # A message posted before the farm, on the same tag numbers the farm
        # uses, must still be there afterwards: the farm runs on a duplicate.
        rank, size = comm.Get_rank(), comm.Get_size()
        request = comm.isend("mine", dest=(rank + 1) % size, tag=102)
        farm_map(comm, square, range(10))
        assert comm.recv(source=(rank - 1) % size, tag=102) == "mine"
        request.wait()


def raises_key_error(x):
    if x == 2:
        raise KeyError("missing")
    return x


def interrupts_on_one(x):
    if x == 1:
        raise KeyboardInterrupt
    return 10 * x


def test_remote_exception_type_is_catchable(comm, collectively):
    with collectively:
        if comm.Get_rank() == 0:
            with pytest.raises(KeyError) as info:
                farm_map(comm, raises_key_error, range(4), chunksize=1)
            assert isinstance(info.value, FarmError)
            original = info.value.__cause__
            assert isinstance(original, KeyError) and original.args == ("missing",)
            assert isinstance(original.__cause__, RemoteTraceback)
            assert "raises_key_error" in str(original.__cause__)
            assert info.value.errors[0].exception is original
        else:
            farm_map(comm, raises_key_error, None)


@pytest.mark.parametrize("errors", ["raise", "collect"])
def test_base_exception_in_a_task_fails_that_task(comm, collectively, errors):
    # At -n 1 and -n 2 the root's own thread runs tasks: a KeyboardInterrupt
    # there must not kill the thread and lose its chunk.
    with collectively:
        tasks = range(8) if comm.Get_rank() == 0 else None
        if errors == "raise":
            if comm.Get_rank() == 0:
                with pytest.raises(FarmError, match=r"task 1 \(1\) failed .*KeyboardInterrupt"):
                    farm_map(comm, interrupts_on_one, tasks, chunksize=1)
            else:
                farm_map(comm, interrupts_on_one, tasks, chunksize=1)
            return
        results = farm_map(comm, interrupts_on_one, tasks, chunksize=1, errors="collect")
        if comm.Get_rank() == 0:
            assert isinstance(results[1], TaskError)
            assert "KeyboardInterrupt" in str(results[1])
            assert [results[i] for i in (0, *range(2, 8))] == [10 * i for i in (0, *range(2, 8))]


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_trace_has_one_span_per_task(comm, collectively, schedule):
    with collectively:
        farm = Farm(comm, square, schedule=schedule, chunksize=None, trace=True)
        results = farm.map(range(30) if comm.Get_rank() == 0 else None)
        if comm.Get_rank() == 0:
            assert results == [x * x for x in range(30)]
            check_spans(farm.stats.trace, 30, farm.stats.elapsed)
            assert {s.host for s in farm.stats.trace} <= set(farm.stats.hosts)


def test_no_trace_unless_asked(comm, collectively):
    with collectively:
        farm = Farm(comm, square)
        farm.map(range(10) if comm.Get_rank() == 0 else None)
        assert farm.stats.trace == []


def test_a_long_generator_is_read_as_the_workers_need_it(comm, collectively):
    """More tasks than the farm reads ahead (256 a computing rank, at least
    1024): every one is done, in order, and an endless one can be left."""
    import itertools

    with collectively:
        root = comm.Get_rank() == 0
        results = farm_map(comm, square, (i for i in range(5000)) if root else None)
        _check(comm, results, [i * i for i in range(5000)])
        got = farm_imap_unordered(comm, square, itertools.count() if root else None)
        if root:
            first = dict(itertools.islice(got, 3000))
            got.close()
            assert len(first) == 3000 and all(v == i * i for i, v in first.items())
        else:
            assert list(got) == []
