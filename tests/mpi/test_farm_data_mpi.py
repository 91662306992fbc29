"""Large data through the farm: out-of-band arrays and bytes, and shared data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ringmpi.farm import FarmError, TaskError, farm_map, shared
from ringmpi.farm._wire import OOB_MIN

pytestmark = pytest.mark.mpi

BIG = 3 * OOB_MIN + 5  # out-of-band, and not a round size


def large_result(i):
    if i % 3 == 0:
        return np.arange(BIG // 8 + i, dtype=np.int64)
    if i % 3 == 1:
        return bytes([i % 256]) * BIG + b"end"
    return {
        "array": np.full((3, BIG // 24), float(i)),
        "i": i,
        "small": np.arange(4),
        "strided": np.arange(BIG // 4)[::2],  # not contiguous: in the stream
        "fortran": np.asfortranarray(np.arange(BIG // 8).reshape(2, -1)),
        "bytearray": bytearray(b"ab") * (BIG // 2),
    }


def expected(i):
    return large_result(i)


def equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return type(b) is np.ndarray and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


def echo_sum(task):
    index, array = task
    return index, int(array.sum()), array[::-1].copy()


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_large_results_come_back_exactly(comm, collectively, schedule):
    with collectively:
        results = farm_map(comm, large_result, range(6), schedule=schedule, cores=comm.Get_size())
        if comm.Get_rank() == 0:
            assert all(equal(r, expected(i)) for i, r in enumerate(results))


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_large_tasks_reach_the_workers(comm, collectively, schedule):
    tasks = [(i, np.arange(BIG // 8, dtype=np.int64) * i) for i in range(5)]
    with collectively:
        results = farm_map(comm, echo_sum, tasks, schedule=schedule, cores=comm.Get_size())
        if comm.Get_rank() == 0:
            for (i, array), (j, total, backwards) in zip(tasks, results):
                assert (j, total) == (i, int(array.sum()))
                assert np.array_equal(backwards, array[::-1])


# --- shared data ------------------------------------------------------------------


def look(_task):
    from mpi4py import MPI

    data = shared()
    table, nested = data["table"], data["nested"][1]["ids"]
    refused = []
    for array in (table, nested):
        try:
            array[0] = 0
        except ValueError:
            refused.append(True)
        else:
            refused.append(False)
    return (
        MPI.COMM_WORLD.Get_rank(),
        refused,
        float(table.sum()),
        nested.tolist(),
        data["name"],
        data["nested"][0],
    )


def osc_maps():
    """Shared-memory windows mapped into this process (Open MPI's osc/sm)."""
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if "osc_sm" in line)


def make_shared():
    return {
        "table": np.linspace(0.0, 1.0, 200_001),
        "nested": (7, {"ids": np.arange(10, dtype=np.int32)}),
        "name": "parameters",
    }


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_shared_dict_of_arrays_is_read_only_on_every_rank(comm, collectively, schedule):
    size = comm.Get_size()
    data = make_shared() if comm.Get_rank() == 0 else None
    with collectively:
        # One task per rank, and every rank computes: each one reports.
        results = farm_map(
            comm, look, range(4 * size), shared=data, schedule=schedule, cores=size, chunksize=1
        )
        if comm.Get_rank() == 0:
            total = float(make_shared()["table"].sum())
            for _rank, refused, table_sum, ids, name, seven in results:
                assert refused == [True, True]
                assert table_sum == total
                assert ids == list(range(10))
                assert (name, seven) == ("parameters", 7)
            if schedule == "static":
                assert len({r[0] for r in results}) == size
        assert osc_maps() == 0  # freed once the farm is done


def fails_on_two(i):
    if i == 2:
        raise ValueError("two")
    return float(shared()["table"][i])


def test_failing_task_leaves_no_window_behind(comm, world, collectively):
    import os

    with collectively:
        before = sorted(f for f in os.listdir("/dev/shm") if f.startswith("osc_sm"))
        for _ in range(5):
            data = make_shared() if comm.Get_rank() == 0 else None
            try:
                farm_map(comm, fails_on_two, range(6), shared=data, cores=comm.Get_size())
            except FarmError as exc:
                assert comm.Get_rank() == 0 and "two" in str(exc)
            else:
                assert comm.Get_rank() != 0
            assert osc_maps() == 0
        # With a split communicator the other part of this job runs its own
        # farms at the same time: its windows are gone only once it is done.
        world.Barrier()
        after = sorted(f for f in os.listdir("/dev/shm") if f.startswith("osc_sm"))
        # Windows of other jobs may come and go, but none of this job's stays.
        assert not set(after) - set(before)


def test_shared_without_arrays_and_the_accessor_outside_a_farm(comm, collectively):
    with collectively:
        data = {"k": [1, 2, 3]} if comm.Get_rank() == 0 else None
        results = farm_map(comm, _first_k, range(3), shared=data, cores=comm.Get_size())
        if comm.Get_rank() == 0:
            assert results == [1, 2, 3]
        with pytest.raises(RuntimeError, match="no shared data"):
            shared()


def _first_k(i):
    return shared()["k"][i]


def test_unpicklable_shared_data_is_refused_on_every_rank(comm, collectively):
    from ringmpi.farm import FarmUsageError

    with collectively:
        data = {"f": lambda: 1} if comm.Get_rank() == 0 else None
        with pytest.raises(FarmUsageError, match="shared data cannot be sent"):
            farm_map(comm, _first_k, range(3), shared=data)


def same_size_array(i):
    return np.full(BIG // 8, i, dtype=np.int64)


def test_results_kept_are_never_written_over_by_later_ones(comm, collectively):
    # Receive buffers are reused once dropped: keep every other result, drop
    # the rest, and every kept one must still hold its own value at the end.
    kept = {}
    with collectively:
        from ringmpi.farm import farm_imap_unordered

        tasks = range(12) if comm.Get_rank() == 0 else None
        for index, value in farm_imap_unordered(comm, same_size_array, tasks, chunksize=1):
            assert value[0] == index and value[-1] == index
            if index % 2 == 0:
                kept[index] = value
            del value
        if comm.Get_rank() == 0:
            assert sorted(kept) == list(range(0, 12, 2))
            assert all(int(v.min()) == int(v.max()) == i for i, v in kept.items())


# --- memory limits ---------------------------------------------------------------

#: A limit far above what a rank holds, and a task that asks for more than it.
LIMIT = "400M"
GREEDY = 3


def greedy(i):
    """Task ``GREEDY`` asks for 600 MiB (refused before a page is touched)."""
    from mpi4py import MPI

    size = 600 << 20 if i == GREEDY else 1 << 20
    return MPI.COMM_WORLD.Get_rank(), float(np.ones(size // 8).sum())


def check_greedy_outcomes(results, comm):
    """39 tasks succeed; the greedy one failed alone, named; with workers,
    none ran on the root (its limit would bind what it holds)."""
    from mpi4py import MPI

    failed = [(i, r) for i, r in enumerate(results) if isinstance(r, TaskError)]
    assert [i for i, _ in failed] == [GREEDY]
    error = failed[0][1]
    assert "MemoryError: past the memory limit of 400 MiB" in str(error)
    assert str(error).startswith(f"task {GREEDY} ({GREEDY}) failed on rank ")
    ok = [r for r in results if not isinstance(r, TaskError)]
    assert len(ok) == 39 and all(total == float((1 << 20) // 8) for _, total in ok)
    if comm.Get_size() > 1:
        assert error.rank != comm.Get_rank()
        assert MPI.COMM_WORLD.Get_rank() not in {rank for rank, _ in ok}


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_a_task_past_the_memory_limit_fails_alone(comm, collectively, schedule):
    with collectively:
        results = farm_map(
            comm, greedy, range(40), schedule=schedule, memory_limit=LIMIT, errors="collect"
        )
        if comm.Get_rank() == 0:
            check_greedy_outcomes(results, comm)
            # The limit was lifted after each task: the root allocates freely.
            assert np.ones((600 << 20) // 8, dtype=np.uint8).nbytes


def test_the_memory_limit_fails_a_raising_farm_with_one_named_error(comm, collectively):
    with collectively:
        if comm.Get_rank() == 0:
            with pytest.raises(FarmError, match="past the memory limit of 400 MiB"):
                farm_map(comm, greedy, range(40), memory_limit=400 << 20)
        else:
            farm_map(comm, greedy, None, memory_limit=400 << 20)


@pytest.mark.parametrize("limit", ["10M", "lots", "-1G", 0])
def test_a_memory_limit_without_room_or_sense_is_refused_on_every_rank(comm, collectively, limit):
    from ringmpi.farm import FarmUsageError

    with collectively:
        with pytest.raises(FarmUsageError) as caught:
            farm_map(comm, greedy, range(4), memory_limit=limit)
        if limit == "10M":
            assert "memory limit of 10 MiB leaves no room for a task" in str(caught.value)
            assert "give at least" in str(caught.value)
        else:
            assert "memory_limit" in str(caught.value)


# --- shared data and memory limits in the executor and the pool -------------------


def in_window(_task):
    """Whether the task's shared table lies in a shared-memory window, and which."""
    table = shared()["table"]
    address = table.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, *rest = line.split()
            low, high = (int(x, 16) for x in span.split("-"))
            if low <= address < high:
                return rest[-1] if "osc_sm" in line or "/dev/shm" in line else None
    return None


def test_the_executor_and_the_pool_share_as_farm_map_does(comm, collectively):
    from ringmpi import FarmExecutor, FarmPool

    size = comm.Get_size()
    with collectively:
        data = make_shared() if comm.Get_rank() == 0 else None
        reference = farm_map(comm, look, range(4 * size), shared=data, cores=size, chunksize=1)
        if reference is not None:  # what each task saw, whichever rank ran it
            reference = [seen[1:] for seen in reference]
        with FarmExecutor(comm, shared=data, cores=size) as ex:
            if ex is not None:
                assert [seen[1:] for seen in ex.map(look, range(4 * size))] == reference
                # One copy per node: every task reads the same window (one
                # rank alone may keep it in its own memory).
                windows = set(ex.map(in_window, range(4 * size)))
                assert len(windows) == 1, windows
                assert size == 1 or None not in windows, windows
        assert osc_maps() == 0  # freed once the executor is done
        pool = FarmPool(comm, shared=data, cores=size)
        if pool.is_master():
            seen = pool.map(look, range(4 * size), chunksize=1)
            assert [one[1:] for one in seen] == reference
            pool.close()
            pool.join()
        else:
            pool.wait()
        assert osc_maps() == 0


def test_the_executor_and_the_pool_refuse_unpicklable_shared_data_on_every_rank(comm, collectively):
    from ringmpi import FarmExecutor, FarmPool
    from ringmpi.farm import FarmUsageError

    with collectively:
        data = {"f": lambda: 1} if comm.Get_rank() == 0 else None
        refused = pytest.raises(FarmUsageError, match="shared data cannot be sent")
        with refused, FarmExecutor(comm, shared=data):
            pass
        with pytest.raises(FarmUsageError, match="shared data cannot be sent"):
            FarmPool(comm, shared=data)


def test_the_executor_and_the_pool_hold_tasks_to_the_memory_limit(comm, collectively):
    from ringmpi import FarmExecutor, FarmPool

    with collectively:
        with FarmExecutor(comm, memory_limit=LIMIT) as ex:
            if ex is not None:
                futures = [ex.submit(greedy, i) for i in range(40)]
                failed = [i for i, f in enumerate(futures) if f.exception() is not None]
                assert failed == [GREEDY]
                error = futures[GREEDY].exception()
                assert isinstance(error, MemoryError)
                assert "past the memory limit of 400 MiB" in str(error)
                assert len({f.result() for i, f in enumerate(futures) if i != GREEDY}) >= 1
        with FarmPool(comm, memory_limit=LIMIT) as pool:
            if pool is not None:
                with pytest.raises(MemoryError, match="past the memory limit of 400 MiB"):
                    pool.map(greedy, range(40))
                assert len(pool.map(greedy, [i for i in range(40) if i != GREEDY])) == 39


def _row(i):
    return shared()["table"][i], (shared()["table"][i : i + 1],)


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_results_that_are_views_of_shared_data_are_copies(comm, collectively, schedule):
    # Computed on the root (at one or two ranks the root computes), a view of
    # the window would point into memory freed when the farm ends.
    table = np.arange(64 * 8, dtype=np.float64).reshape(64, 8)
    with collectively:
        data = {"table": table} if comm.Get_rank() == 0 else None
        tasks = range(64) if comm.Get_rank() == 0 else None
        results = farm_map(comm, _row, tasks, shared=data, schedule=schedule)
        # A second farm's window takes the memory the first one freed.
        other = {"table": -table} if comm.Get_rank() == 0 else None
        farm_map(comm, _row, tasks, shared=other, schedule=schedule)
        if comm.Get_rank() == 0:
            assert all(np.array_equal(row, table[i]) for i, (row, _) in enumerate(results))
            assert all(np.array_equal(part[0][0], table[i]) for i, (_, part) in enumerate(results))


def _kinds(_i):
    data = shared()
    masked, matrix, records = data["masked"], data["matrix"], data["records"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        product = (matrix * matrix).tolist()
    return (
        type(masked).__name__,
        float(masked.mean()),
        type(matrix).__name__,
        product,
        type(records).__name__,
        records.b.tolist(),
    )


def test_shared_arrays_keep_their_type(comm, collectively):
    masked = np.ma.MaskedArray([1.0, 1.0, 1000.0], mask=[False, False, True])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        matrix = np.matrix([[1, 2], [3, 4]])
    records = np.rec.fromrecords([(1, 2.5), (2, 3.5)], names="a,b")
    with collectively:
        data = {"masked": masked, "matrix": matrix, "records": records}
        data = data if comm.Get_rank() == 0 else None
        tasks = range(comm.Get_size() * 2) if comm.Get_rank() == 0 else None
        results = farm_map(comm, _kinds, tasks, shared=data)
        if comm.Get_rank() == 0:
            expected = (
                "MaskedArray",
                1.0,
                "matrix",
                [[7, 10], [15, 22]],
                "recarray",
                [2.5, 3.5],
            )
            assert all(result == expected for result in results), results[0]
