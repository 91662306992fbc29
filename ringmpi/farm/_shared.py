"""Read-only data shared by the farm's ranks, sent once per node.

``Farm(..., shared=obj)``: the numpy arrays in ``obj`` (at any depth of
dicts, lists and tuples) are copied into one MPI-3 shared-memory window per
node (``MPI.Win.Allocate_shared`` on ``comm.Split_type(COMM_TYPE_SHARED)``):
the root fills the window of its own node and sends its contents once to one
rank of each other node. The rest of ``obj``, with a placeholder for each
array, is sent once to each rank. Tasks (and the initializer) reach it with
:func:`shared`, where each array is a read-only view of the window: writing
to it raises ``ValueError``.

Protocol: after ``Tag.START``, ``R -> W`` ``Tag.SHARED``: ``None`` (no shared
data) or a :class:`Header`. With arrays, every rank then splits the node
communicator and allocates the window; the root gathers which ranks receive
for their node, fills its own node's window, and sends the window's bytes on
``Tag.BULK`` to each of them; each node waits in a barrier before use.

The window is freed when the farm ends, on every path that ends it (a failed
task and ``errors="raise"`` included): the views must not be kept past it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base import poll
from ._outcome import Tag
from ._wire import _transfer, isend, received

#: Each array starts at a multiple of this many bytes in the window.
ALIGN = 64

_current: list[Any] = []


def shared() -> Any:
    """Return the running farm's shared data, on any rank of the farm.

    Call it inside a task or the initializer of ``Farm(..., shared=obj)``:
    it returns ``obj``, its numpy arrays as read-only views of one
    shared-memory copy per node. The views are valid only while the farm
    runs: do not keep them.

    Raises:
        RuntimeError: No farm with shared data is running on this rank.
    """
    if not _current:
        raise RuntimeError(
            "no shared data: ringmpi.farm.shared() works in the tasks and the "
            "initializer of a Farm (or farm_map) given shared=..."
        )
    return _current[-1]


class _Slot:
    """Stands for the array at ``index`` in the skeleton of shared data."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self):
        return (_Slot, (self.index,))


@dataclass
class Header:
    """What every rank is sent: the skeleton, and where each array lies."""

    skeleton: Any
    #: ``(dtype, shape, offset)`` of each array in the window
    arrays: list[tuple[Any, tuple[int, ...], int]]
    size: int


def _split(obj: Any, arrays: list[np.ndarray]) -> Any:
    """Return ``obj`` with each numpy array in its containers as a ``_Slot``."""
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        arrays.append(obj)
        return _Slot(len(arrays) - 1)
    kind = type(obj)
    if kind is dict:
        return {key: _split(value, arrays) for key, value in obj.items()}
    if kind is list or kind is tuple:
        return kind(_split(item, arrays) for item in obj)
    return obj


def _join(skeleton: Any, views: list[np.ndarray]) -> Any:
    """Put the views in the places of the ``_Slot`` of ``skeleton``."""
    kind = type(skeleton)
    if kind is _Slot:
        return views[skeleton.index]
    if kind is dict:
        return {key: _join(value, views) for key, value in skeleton.items()}
    if kind is list or kind is tuple:
        return kind(_join(item, views) for item in skeleton)
    return skeleton


class Plan:
    """The root's shared data, split into arrays and the rest."""

    def __init__(self, obj: Any):
        self.arrays: list[np.ndarray] = []
        skeleton = _split(obj, self.arrays)
        placed = []
        size = 0
        for array in self.arrays:
            size = -(-size // ALIGN) * ALIGN
            placed.append((array.dtype, array.shape, size))
            size += array.nbytes
        self.header = Header(skeleton, placed, size)

    def problem(self) -> str | None:
        """Return why the shared data cannot be sent, or None."""
        import pickle

        try:
            pickle.dumps(self.header.skeleton, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            return (
                f"the shared data cannot be sent to the workers: {type(exc).__name__}: {exc} "
                "(numpy arrays in dicts, lists and tuples are shared; the rest must pickle)"
            )
        return None


def _views(memory: Any, header: Header, readonly: bool) -> list[np.ndarray]:
    base = memoryview(memory)
    if readonly:
        base = base.toreadonly()
    out = []
    for dtype, shape, offset in header.arrays:
        count = int(np.prod(shape, dtype=np.int64))
        out.append(np.frombuffer(base, dtype, count, offset).reshape(shape))
    return out


@contextlib.contextmanager
def attach(comm, root: int, plan: Plan | None) -> Iterator[None]:
    """Share the root's ``plan`` over ``comm`` for the body; collective.

    Other ranks pass None. The window and the node communicator are freed
    when the body ends, however it ends.
    """
    rank = comm.Get_rank()
    if rank == root:
        header = None if plan is None else plan.header
        requests = [isend(comm, header, r, Tag.SHARED) for r in range(comm.Get_size()) if r != root]
        for request in requests:
            poll.wait(request)
    else:
        header = received(comm, poll.recv(comm, root, Tag.SHARED), root)
    if header is None:
        yield
        return
    if not header.arrays:
        _current.append(_join(header.skeleton, []))
        try:
            yield
        finally:
            _current.pop()
        return
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    win = None
    try:
        win = MPI.Win.Allocate_shared(header.size if node.Get_rank() == 0 else 0, 1, comm=node)
        memory: Any = win.Shared_query(0)[0]
        root_here = node.allreduce(rank == root, op=MPI.LOR)
        receives = comm.gather(node.Get_rank() == 0 and not root_here, root=root)
        window = np.frombuffer(memory, np.uint8, header.size)
        if rank == root:
            assert plan is not None and receives is not None
            for view, array in zip(_views(memory, header, readonly=False), plan.arrays):
                np.copyto(view, array)
            for leader in (r for r, flag in enumerate(receives) if flag):
                _transfer(comm.Send, window, leader)
        elif node.Get_rank() == 0 and not root_here:
            _transfer(comm.Recv, window, root)
        del window
        # Stores by one rank of the node are seen by the others after this.
        poll.barrier(node)
        _current.append(_join(header.skeleton, _views(memory, header, readonly=True)))
        del memory
        try:
            yield
        finally:
            _current.pop()
    finally:
        if win is not None:
            win.Free()
        node.Free()
