"""FarmExecutor against the ``concurrent.futures`` documentation, on real communicators.

Tasks that must stay running wait for a file the root writes (``wait_for``),
so no test depends on how fast the machine is.
"""

from __future__ import annotations

import concurrent.futures
import functools
import gc
import os
import pickle
import time
import weakref
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    as_completed,
    wait,
)

import pytest

from ringmpi import FarmExecutor
from ringmpi.farm import RemoteTraceback, TaskError

pytestmark = pytest.mark.mpi


def square(x):
    return x * x


def add(x, y=0, *, z=0):
    return x + y + z


def fails(x):
    raise KeyError(f"no {x}")


def wait_for(path, value=None):
    while not os.path.exists(path):
        time.sleep(0.005)
    return value


def unpicklable_error(_x):
    class Local(Exception):
        pass

    raise Local("cannot travel")


_STATE = {"value": None}


def remember(value):
    _STATE["value"] = value


def recall():
    return _STATE["value"]


def on_root(comm, body, **options):
    """Every rank enters the executor; the root runs ``body(ex, ...)``."""
    with FarmExecutor(comm, **options) as ex:
        if ex is not None:
            return body(ex)
    return None


def running(futures):
    """Wait until every future is running (its task was sent)."""
    while not all(f.running() or f.done() for f in futures):
        time.sleep(0.005)


def test_submit_result_exception(comm, collectively):
    def body(ex):
        assert ex.submit(square, 7).result() == 49
        assert ex.submit(add, 1, 2, z=3).result() == 6
        assert ex.submit(pow, 2, 10).result() == 1024
        assert ex.submit(functools.partial(add, 10), 5).result() == 15
        f = ex.submit(fails, "key")
        exc = f.exception()
        assert isinstance(exc, KeyError) and exc.args == ("no key",)
        assert isinstance(exc.__cause__, RemoteTraceback)
        assert "in fails" in str(exc.__cause__)
        with pytest.raises(KeyError):
            f.result()
        g = ex.submit(unpicklable_error, 1)
        assert isinstance(g.exception(), TaskError)
        assert "cannot travel" in str(g.exception())
        assert f.done() and not f.cancelled() and not f.running()

    with collectively:
        on_root(comm, body)


@pytest.mark.parametrize("chunksize", [1, 3, 50])
def test_map_in_order(comm, collectively, chunksize):
    def body(ex):
        assert list(ex.map(square, range(40)[::-1], chunksize=chunksize)) == [
            x * x for x in range(40)[::-1]
        ]
        assert list(ex.map(add, [1, 2, 3], [10, 20], chunksize=chunksize)) == [11, 22]
        assert list(ex.map(square, [], chunksize=chunksize)) == []
        with pytest.raises(KeyError):
            list(ex.map(fails, [1], chunksize=chunksize))
        with pytest.raises(ValueError):
            ex.map(square, [1], chunksize=0)

    with collectively:
        on_root(comm, body)


def test_map_is_lazy_and_times_out(comm, collectively, tmp_path):
    def body(ex):
        gate = str(tmp_path / "gate")
        # map returns before any result is in: the task waits for a file
        # written only after map has returned.
        results = ex.map(wait_for, [gate, gate], ["a", "b"])
        open(gate, "w").close()
        assert list(results) == ["a", "b"]
        late = str(tmp_path / "late")
        results = ex.map(wait_for, [late], timeout=0.2)
        # concurrent.futures' own: the builtin TimeoutError is it only from 3.11.
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        open(late, "w").close()

    with collectively:
        on_root(comm, body)


def test_as_completed_and_wait(comm, collectively, tmp_path):
    def body(ex):
        fs = [ex.submit(square, i) for i in range(20)]
        assert sorted(f.result() for f in as_completed(fs)) == sorted(i * i for i in range(20))
        gate = str(tmp_path / "gate")
        # In this order a single computing rank runs them too.
        quick = ex.submit(square, 3)
        bad = ex.submit(fails, 1)
        slow = ex.submit(wait_for, gate)
        done, not_done = wait([quick, slow], return_when=FIRST_COMPLETED)
        assert quick in done and slow in not_done
        done, not_done = wait([slow, bad], return_when=FIRST_EXCEPTION)
        assert bad in done and slow in not_done
        open(gate, "w").close()
        done, not_done = wait([quick, slow, bad], return_when=ALL_COMPLETED, timeout=60)
        assert not not_done

    with collectively:
        on_root(comm, body)


def test_callbacks(comm, collectively):
    def body(ex):
        seen = []
        f = ex.submit(square, 4)
        f.add_done_callback(lambda fut: seen.append(("first", fut.result())))
        f.add_done_callback(lambda fut: seen.append(("second", fut is f)))
        f.result()
        wait([f])
        # Callbacks run on a thread of their own, in the order added, soon
        # after the result is set (never on the thread that makes MPI calls).
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        # A callback added to a done future runs at once, in this thread.
        f.add_done_callback(lambda fut: seen.append(("late", fut.result())))
        assert seen == [("first", 16), ("second", True), ("late", 16)]

    with collectively:
        on_root(comm, body)


def test_cancel_and_shutdown_cancel_futures(comm, collectively, tmp_path):
    def body(ex):
        gate = str(tmp_path / "gate")
        blockers = [ex.submit(wait_for, gate, i) for i in range(ex.workers)]
        running(blockers)
        queued = [ex.submit(square, i) for i in range(20)]
        assert queued[0].cancel() and queued[0].cancelled()
        assert not blockers[0].cancel()  # sent: too late to cancel
        ex.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in queued)
        with pytest.raises(CancelledError):
            queued[5].result()
        open(gate, "w").close()
        ex.shutdown(wait=True)
        assert [f.result() for f in blockers] == list(range(ex.workers))

    with collectively:
        on_root(comm, body)


def test_shutdown_waits_and_refuses_new_work(comm, collectively):
    def body(ex):
        fs = [ex.submit(square, i) for i in range(50)]
        ex.shutdown(wait=True)
        assert all(f.done() for f in fs)
        assert [f.result() for f in fs] == [i * i for i in range(50)]
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.submit(square, 1)
        with pytest.raises(RuntimeError):
            ex.map(square, [1])
        ex.shutdown()  # again: nothing happens

    with collectively:
        on_root(comm, body)


def test_initializer_runs_on_every_computing_rank(comm, collectively):
    def body(ex):
        return [f.result() for f in [ex.submit(recall) for _ in range(20)]]

    with collectively:
        values = on_root(comm, body, initializer=remember, initargs=("ready",))
        if comm.Get_rank() == 0:
            assert values == ["ready"] * 20


def test_error_in_the_block_ends_every_rank(comm, collectively):
    with collectively:
        if comm.Get_rank() == 0:
            with pytest.raises(ZeroDivisionError), FarmExecutor(comm) as ex:
                ex.submit(square, 2)
                1 / 0  # noqa: B018
        else:
            with FarmExecutor(comm) as ex:
                assert ex is None


def test_map_reads_its_input_outside_the_executor(comm, collectively):
    """An input that waits on earlier futures (or submits more) does not stop
    the executor: it is read on the caller's thread, outside any lock."""

    def body(ex):
        earlier = [ex.submit(square, i) for i in range(5)]
        later = ex.map(square, (f.result() for f in earlier))
        assert list(later) == [i**4 for i in range(5)]
        nested = ex.map(square, (ex.submit(square, i).result() for i in range(3)))
        assert list(nested) == [0, 1, 16]

    with collectively:
        on_root(comm, body)


def test_a_task_that_cannot_travel_fails_alone(comm, collectively):
    def body(ex):
        bad = ex.submit(square, lambda: 1)  # its argument cannot be pickled
        good = [ex.submit(square, i) for i in range(20)]
        assert [f.result() for f in good] == [i * i for i in range(20)]
        if comm.Get_size() > 1:
            assert bad.exception() is not None
        assert ex.submit(square, 3).result() == 9  # the executor goes on

    with collectively:
        on_root(comm, body)


class Token:
    """A result or a callable's owner whose lifetime the tests watch."""

    def method(self):
        return None


def make_token(_x):
    return Token()


def collected(ref, seconds=30.0):
    """Whether the object behind the weak reference ``ref`` goes (the executor
    may drop its last reference on its own thread a moment later)."""
    deadline = time.monotonic() + seconds
    while ref() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.005)
    return ref() is None


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"unordered": True},
        {"chunksize": 4},
        {"buffersize": 3},
        {"chunksize": 2, "unordered": True},
    ],
)
def test_map_lets_go_of_each_result_it_yielded(comm, collectively, options):
    # CPython bpo-14406: the iterator holds no result the caller has dropped.
    def body(ex):
        seen = 0
        for token in ex.map(make_token, range(10), **options):
            ref = weakref.ref(token)
            del token
            assert collected(ref), f"result {seen} outlived its yield"
            seen += 1
        assert seen == 10

    with collectively:
        on_root(comm, body)


def test_a_done_task_lets_go_of_its_callable(comm, collectively):
    # CPython's test_no_stale_references: the executor holds no task it ran.
    def body(ex):
        token = Token()
        ref = weakref.ref(token)
        ex.submit(token.method).result()
        del token
        assert collected(ref), "the task's callable outlived the task"

    with collectively:
        on_root(comm, body)


def unsendable(_x):
    return functools.partial(lambda: None)  # holds a lambda: cannot be pickled


def test_mpi4py_futures_names(comm, collectively):
    def body(ex):
        assert list(ex.starmap(add, [(1, 2), [3, 4], (5,)])) == [3, 7, 5]
        assert list(ex.starmap(add, iter([(1, 1)] * 5), chunksize=2)) == [2] * 5
        assert sorted(ex.starmap(add, [(i, i) for i in range(9)], unordered=True)) == [
            2 * i for i in range(9)
        ]
        assert list(ex.starmap(add, ((i, 1) for i in range(7)), buffersize=2)) == list(range(1, 8))
        assert sorted(ex.map(square, range(6), buffersize=1, unordered=True)) == [
            x * x for x in range(6)
        ]
        assert ex.num_workers == ex.workers >= 1
        assert ex.bootup() is ex and ex.bootup(wait=False) is ex
        ex.shutdown()
        assert ex.num_workers == 0
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.bootup()

    with collectively:
        on_root(comm, body)


def test_an_executor_is_entered_again_after_its_block(comm, collectively):
    executor = FarmExecutor(comm)
    with collectively:
        with executor as ex:
            if ex is not None:
                assert ex.submit(square, 3).result() == 9
                with pytest.raises(RuntimeError, match="in use already"):
                    executor.__enter__()
        with executor as ex:  # a new farm on the same communicator
            if ex is not None:
                assert list(ex.map(square, range(4))) == [0, 1, 4, 9]


def test_a_result_that_cannot_travel_raises_why(comm, collectively):
    # As ProcessPoolExecutor: the future raises the pickling error itself,
    # with the remote traceback (its .tb text) as the cause.
    def body(ex):
        error = ex.submit(unsendable, 1).exception()
        if comm.Get_size() > 1 or ex.workers > 1:
            assert isinstance(error, (pickle.PicklingError, AttributeError, TypeError)), error
            assert isinstance(error.__cause__, RemoteTraceback)
            assert "pickle" in error.__cause__.tb
        assert ex.submit(square, 2).result() == 4

    with collectively:
        on_root(comm, body)


def test_wait_and_as_completed_see_cancelled_futures(comm, collectively, tmp_path):
    # A cancelled future is done for wait() and as_completed() at once: the
    # executor says so (set_running_or_notify_cancel), as ProcessPoolExecutor.
    def body(ex):
        gate = str(tmp_path / "gate")
        blockers = [ex.submit(wait_for, gate, i) for i in range(ex.workers)]
        running(blockers)
        queued = [ex.submit(square, i) for i in range(10)]
        assert queued[-1].cancel()
        done, _ = wait([queued[-1]], timeout=30)
        assert done == {queued[-1]}
        assert list(as_completed([queued[-1]], timeout=30)) == [queued[-1]]
        ex.shutdown(wait=False, cancel_futures=True)
        done, not_done = wait(queued, timeout=30)
        assert not not_done and all(f.cancelled() for f in queued)
        open(gate, "w").close()

    with collectively:
        on_root(comm, body)


def test_an_initializer_that_cannot_be_called_is_refused_at_once(comm, collectively):
    with collectively, pytest.raises(TypeError, match="initializer must be a callable"):
        FarmExecutor(comm, initializer=123)
