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
