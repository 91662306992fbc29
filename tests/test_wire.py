"""The farm's receive buffers: reused only once every array made from them is gone."""

from __future__ import annotations

import pickle

import numpy as np

from ringmpi.farm._wire import OOB_MIN, Recycler


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def test_a_buffer_in_use_is_never_handed_out_again():
    recycler = Recycler()
    first = recycler.take(OOB_MIN)
    second = recycler.take(OOB_MIN)
    assert _address(first) != _address(second)


def test_a_dropped_buffer_of_the_same_size_is_reused():
    recycler = Recycler()
    first = recycler.take(2 * OOB_MIN)
    where = _address(first)
    del first
    assert _address(recycler.take(2 * OOB_MIN)) == where
    assert _address(recycler.take(3 * OOB_MIN)) != where


def test_an_array_unpickled_from_the_buffer_keeps_it_in_use():
    recycler = Recycler()
    source = np.arange(OOB_MIN // 8, dtype=np.int64)
    buffers = []
    stream = pickle.dumps(source, protocol=5, buffer_callback=buffers.append)
    buffer = recycler.take(OOB_MIN)
    buffer[:] = np.frombuffer(buffers[0].raw(), dtype=np.uint8)
    result = pickle.loads(stream, buffers=[buffer])
    where = _address(buffer)
    del buffer
    assert _address(result) == where
    assert _address(recycler.take(OOB_MIN)) != where  # result still holds it
    view = result[::2]
    del result
    assert _address(recycler.take(OOB_MIN)) != where  # a view of it does too
    assert int(view[-1]) == OOB_MIN // 8 - 2


def test_small_buffers_are_not_kept_and_release_lets_go():
    recycler = Recycler(keep=2, keep_bytes=4 * OOB_MIN)
    assert recycler.take(10).nbytes == 10
    assert len(recycler) == 0
    a, b = recycler.take(OOB_MIN), recycler.take(OOB_MIN)
    del a, b
    c = recycler.take(2 * OOB_MIN)  # over keep: one of the two dropped ones goes
    assert len(recycler) == 2
    recycler.release()
    assert len(recycler) == 1  # only the one still in use
    del c
    recycler.release(keep=1, keep_bytes=2 * OOB_MIN)
    assert len(recycler) == 1  # kept for the next farm
    recycler.release()
    assert len(recycler) == 0


def _refuse(word):
    raise ValueError(word)


class _RefusesHere:
    """Unpickles by calling a function that raises."""

    def __reduce__(self):
        return (_refuse, ("no",))


class _RaisesAsSet:
    def __init__(self):
        self.state = 1

    def __setstate__(self, state):
        raise ValueError("never set")


def test_a_stream_that_raises_is_salvaged_around_what_raised():
    import pickle as std

    from ringmpi.farm._wire import Salvaged, Unreadable, _load_salvaging

    data = std.dumps([1, _RefusesHere(), {"k": _RefusesHere()}, np.arange(3)], protocol=5)
    got = _load_salvaging(data, None)
    assert isinstance(got, Salvaged)
    assert got.obj[0] == 1 and got.obj[3].tolist() == [0, 1, 2]
    assert isinstance(got.obj[1], Unreadable) and isinstance(got.obj[2]["k"], Unreadable)
    assert sorted(map(id, (got.obj[1], got.obj[2]["k"]))) == sorted(got.unreadable)
    assert all(str(exc) == "no" for _, exc in got.unreadable.values())
    assert str(got.error) == "no"


def test_a_stream_that_cannot_be_salvaged_raises_what_it_raised():
    from ringmpi.farm._wire import _load_salvaging

    data = pickle.dumps([1, _RaisesAsSet()], protocol=5)
    try:
        _load_salvaging(data, None)
    except ValueError as exc:
        assert str(exc) == "never set"
    else:
        raise AssertionError("it unpickled")
    assert _load_salvaging(pickle.dumps([1, 2]), None) == [1, 2]
