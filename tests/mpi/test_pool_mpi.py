"""FarmPool on real communicators: multiprocessing.Pool's behaviour beyond the results
(those are compared with multiprocessing.Pool in tests/test_pool_e2e.py)."""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.pool
import os
import threading
import time
import weakref

import pytest

from ringmpi import FarmPool
from ringmpi.farm import RemoteTraceback

pytestmark = pytest.mark.mpi


def square(x):
    return x * x


def fails_on_three(x):
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def wait_for(path):
    while not os.path.exists(path):
        time.sleep(0.005)
    return path


def on_root(comm, body, **options):
    with FarmPool(comm, **options) as pool:
        if pool is not None:
            return body(pool)
    return None


def test_errors_are_the_tasks_own(comm, collectively):
    def body(pool):
        with pytest.raises(ValueError, match="three is not allowed") as info:
            pool.map(fails_on_three, range(10), chunksize=2)
        assert isinstance(info.value.__cause__, RemoteTraceback)
        with pytest.raises(ValueError):
            pool.apply(fails_on_three, (3,))
        with pytest.raises(ValueError):
            list(pool.imap(fails_on_three, range(5)))
        # The pool still works after a failed call.
        assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]

    with collectively:
        on_root(comm, body)


def test_async_results_and_callbacks(comm, collectively, tmp_path):
    def body(pool):
        called = threading.Event()
        values, errors = [], []

        def callback(value):
            values.append(value)
            called.set()

        result = pool.map_async(square, range(6), callback=callback)
        assert result.get(timeout=60) == [0, 1, 4, 9, 16, 25]
        assert called.wait(60) and values == [[0, 1, 4, 9, 16, 25]]
        assert result.ready() and result.successful()
        failed = pool.apply_async(fails_on_three, (3,), error_callback=errors.append)
        failed.wait(60)
        assert not failed.successful()
        deadline = time.monotonic() + 60
        while not errors and time.monotonic() < deadline:
            time.sleep(0.005)
        assert isinstance(errors[0], ValueError)
        gate = str(tmp_path / "gate")
        slow = pool.apply_async(wait_for, (gate,))
        with pytest.raises(multiprocessing.TimeoutError):
            slow.get(timeout=0.1)
        with pytest.raises(ValueError):
            slow.successful()  # not ready
        open(gate, "w").close()
        assert slow.get(timeout=60) == gate

    with collectively:
        on_root(comm, body)


def test_close_join_terminate(comm, collectively):
    with collectively:
        pool = FarmPool(comm)
        if not pool.is_master():
            assert pool.is_worker()
            pool.wait()
        else:
            result = pool.map_async(square, range(20))
            with pytest.raises(ValueError, match="still running"):
                pool.join()
            pool.close()
            with pytest.raises(ValueError, match="not running"):
                pool.map(square, [1])
            pool.join()
            assert result.get(timeout=0) == [x * x for x in range(20)]
            pool.terminate()  # after join: nothing left to do

    with collectively:
        pool = FarmPool(comm)
        if pool.is_master():
            pool.terminate()
            with pytest.raises(ValueError):
                pool.apply(square, (2,))
        pool.wait()


def test_a_pool_dropped_without_close_is_collected(comm, collectively):
    # Nothing of the library keeps a root's pool alive (an exit hook holds
    # only its service, weakly); collected while running, it is terminated
    # with a ResourceWarning, as multiprocessing's is.
    with collectively:
        pool = FarmPool(comm)
        if pool.is_master():
            service = pool._service
            assert pool.map(abs, [-1, -2]) == [1, 2]
            ref = weakref.ref(pool)
            with pytest.warns(ResourceWarning, match="running FarmPool was collected"):
                del pool
                gc.collect()
            assert ref() is None
            service.shutdown(wait=True)
        else:
            pool.wait()


def unsendable(_x):
    return threading.Lock()


def batch_sum(batch):
    (start, end), values = batch
    return (start, end, sum(values))


def test_schwimmbad_map_callback_batched_map_and_wait_callback(comm, collectively):
    finished = []
    with collectively:
        pool = FarmPool(comm)
        if not pool.is_master():
            pool.wait(callback=lambda: finished.append(True))
            assert finished == [True]  # after the root closed the pool
        else:
            seen = []
            assert pool.map(square, range(12), callback=seen.append) == [x * x for x in range(12)]
            assert sorted(seen) == [x * x for x in range(12)]
            seen.clear()
            # schwimmbad's positional map(worker, tasks, callback)
            assert pool.map(square, [2, 3], seen.append) == [4, 9]
            assert sorted(seen) == [4, 9]
            batches = pool.batched_map(batch_sum, range(10))
            assert len(batches) == min(pool.size, 10)
            assert batches[0][0] == 0 and batches[-1][1] == 10
            assert all(a[1] == b[0] for a, b in zip(batches, batches[1:]))
            assert sum(b[2] for b in batches) == sum(range(10))
            assert pool.batched_map(batch_sum, []) == []
            pool.wait(callback=lambda: finished.append("root"))  # the root returns at once
            assert finished == []
            pool.close()
            pool.join()


def test_multiprocessing_pool_habits(comm, collectively):
    def body(pool):
        # A result that cannot be sent back: multiprocessing's MaybeEncodingError.
        with pytest.raises(multiprocessing.pool.MaybeEncodingError, match="Error sending result"):
            pool.apply(unsendable, (1,))
        with pytest.raises(multiprocessing.pool.MaybeEncodingError, match=r"_thread\.lock"):
            pool.map(unsendable, range(3))
        # The remote traceback carries .tb, as concurrent.futures' does.
        with pytest.raises(ValueError) as info:
            pool.apply(fails_on_three, (3,))
        assert "fails_on_three" in info.value.__cause__.tb
        assert pool.map(square, [3]) == [9]

    with collectively:
        on_root(comm, body)
    with collectively:
        pool = FarmPool(comm)
        if pool.is_master():
            pool.close()
            with pytest.raises(ValueError, match="Pool not running"), pool:
                pass
            pool.join()
        else:
            pool.wait()


def raises_at(count, at):
    for i in range(count):
        if i == at:
            raise KeyError(f"item {i}")
        yield i


def test_a_callback_has_run_once_the_result_is_ready(comm, collectively):
    def body(pool):
        for _ in range(20):
            out = []
            result = pool.map_async(int, ["1", "2"], callback=out.append)
            result.wait()
            assert result.ready() and out == [[1, 2]]
            errors = []
            failed = pool.apply_async(fails_on_three, (3,), error_callback=errors.append)
            failed.wait()
            assert len(errors) == 1 and not failed.successful()

    with collectively:
        on_root(comm, body)


def test_imap_yields_what_came_before_its_input_raised(comm, collectively):
    # As multiprocessing's: the results of the items read before the failure,
    # then the iterable's own exception.
    def body(pool):
        for unordered in (False, True):
            read = pool.imap_unordered if unordered else pool.imap
            it = read(square, raises_at(10, 3))
            got = [next(it) for _ in range(3)]
            assert sorted(got) == [0, 1, 4]
            with pytest.raises(KeyError, match="item 3"):
                next(it)
        it = pool.imap(square, raises_at(20, 7), 2)  # the chunk with the failure is lost
        assert [next(it) for _ in range(6)] == [0, 1, 4, 9, 16, 25]
        with pytest.raises(KeyError):
            next(it)

    with collectively:
        on_root(comm, body)
