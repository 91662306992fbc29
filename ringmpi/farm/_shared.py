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


#: Array types shared as views of the window (``view(kind)`` keeps the type:
#: they hold no state besides their data). Other subclasses (``MaskedArray``,
#: with its mask) travel pickled, whole, with the rest of the shared data.
SHARED_KINDS = (np.ndarray, np.recarray, np.matrix)

#: ``(start, end)`` addresses of the windows attached on this rank: a result
#: computed here must not point into one (it is freed with the farm).
_spans: list[tuple[int, int]] = []


class _Slot:
    """Stands for the array at ``index`` in the skeleton of shared data, of
    type ``kind`` (None: a plain ``ndarray``)."""

    __slots__ = ("index", "kind")

    def __init__(self, index: int, kind: type | None = None):
        self.index = index
        self.kind = kind

    def __reduce__(self):
        return (_Slot, (self.index, self.kind))


@dataclass
class Header:
    """What every rank is sent: the skeleton, and where each array lies."""

    skeleton: Any
    #: ``(dtype, shape, offset)`` of each array in the window
    arrays: list[tuple[Any, tuple[int, ...], int]]
    size: int


def _split(obj: Any, arrays: list[np.ndarray]) -> Any:
    """Return ``obj`` with each numpy array in its containers as a ``_Slot``."""
    if type(obj) in SHARED_KINDS and not obj.dtype.hasobject:
        arrays.append(obj)
        return _Slot(len(arrays) - 1, None if type(obj) is np.ndarray else type(obj))
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
        view = views[skeleton.index]
        return view if skeleton.kind is None else view.view(skeleton.kind)
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


def attached() -> bool:
    """Whether this rank holds a shared window now."""
    return bool(_spans)


def unshare(value: Any) -> Any:
    """Return ``value`` with every array in it (at any depth of dicts, lists
    and tuples) that points into a shared window copied out of it; ``value``
    itself when none does. For results computed on a rank that holds a window."""
    if not _spans:
        return value
    return _copied(value)


def _copied(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        address = obj.__array_interface__["data"][0]
        if obj.size and any(lo <= address < hi for lo, hi in _spans):
            return obj.copy()
        return obj
    kind = type(obj)
    if kind is dict:
        items = {key: _copied(value) for key, value in obj.items()}
        return obj if all(items[k] is v for k, v in obj.items()) else items
    if kind is list or kind is tuple:
        copied = [_copied(item) for item in obj]
        return obj if all(a is b for a, b in zip(copied, obj)) else kind(copied)
    return obj


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
        start = np.frombuffer(memory, np.uint8, header.size).ctypes.data
        span = (start, start + header.size)
        _spans.append(span)
        del memory
        try:
            yield
        finally:
            _spans.remove(span)
            _current.pop()
    finally:
        if win is not None:
            win.Free()
        node.Free()
