"""Messages of any size between the farm's ranks.

An object is pickled once with protocol 5. A message with nothing large in it
travels as one ordinary pickled message, byte for byte what ``comm.send``
would send, so small tasks cost what they always did and ``Message.recv()``
reads it. A large one travels in parts:

* on the message's own tag, a small :class:`Bulk` header: the sizes of the
  parts to follow;
* on ``Tag.BULK``, from the same sender, the pickle stream and then each
  out-of-band buffer as a raw message, of any size (past 2 GiB as one derived
  datatype, see :func:`ringmpi.buffers.buffer_spec`).

numpy arrays (any object that pickles its data as a ``PickleBuffer``) of at
least ``OOB_MIN`` bytes go out-of-band: sent from the sender's own memory and
received straight into the memory of the array the receiver gets, with no
pickled copy on either side. A ``bytes`` object of that size at the top of a
message or inside its tuples and lists (three levels deep, where the farm puts
task arguments and results) goes out-of-band too; the receiver gets a
``bytes`` copy of what arrived.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from ..buffers import MAX_COUNT, buffer_spec
from ._outcome import Tag

#: Buffers smaller than this stay in the pickle stream.
OOB_MIN = 1 << 20
#: How deep tuples and lists are searched for large ``bytes``.
LIFT_DEPTH = 3


class Bulk:
    """The header of a message sent in parts: ``sizes[0]`` bytes of pickle
    stream, then one out-of-band buffer of each of ``sizes[1:]`` bytes."""

    __slots__ = ("sizes",)

    def __init__(self, sizes: list[int]):
        self.sizes = sizes

    def __reduce__(self):
        return (Bulk, (self.sizes,))

    def receive(self, comm, source: int) -> Any:
        """Receive the parts from ``source`` and return the object."""
        parts = [np.empty(size, dtype=np.uint8) for size in self.sizes]
        for part in parts:
            _transfer(comm.Recv, part, source)
        data, buffers = parts[0], parts[1:]
        del parts
        return pickle.loads(data.data, buffers=buffers)


class _OutOfBand:
    """A large ``bytes`` object, pickled as an out-of-band buffer."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def __reduce_ex__(self, protocol):
        return (bytes, (pickle.PickleBuffer(self.data),))


def _lift(obj: Any, depth: int) -> Any:
    kind = type(obj)
    if kind is bytes:
        return _OutOfBand(obj) if len(obj) >= OOB_MIN else obj
    if depth and (kind is tuple or kind is list):
        items = [_lift(item, depth - 1) for item in obj]
        for new, old in zip(items, obj):
            if new is not old:
                return kind(items)
    return obj


def dumps(obj: Any) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj``; return the pickle stream and the out-of-band buffers."""
    buffers: list[memoryview] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: in the stream
            return True
        if raw.nbytes < OOB_MIN:
            return True
        buffers.append(raw)
        return False

    data = pickle.dumps(
        _lift(obj, LIFT_DEPTH), pickle.HIGHEST_PROTOCOL, buffer_callback=out_of_band
    )
    return data, buffers


def _as_bytes(buffer: Any) -> np.ndarray:
    return np.frombuffer(buffer, dtype=np.uint8)


def _transfer(call, buffer: Any, peer: int):
    """``call(spec, peer, Tag.BULK)`` for a buffer of any size."""
    spec, dtype = buffer_spec(_as_bytes(buffer))
    try:
        return call(spec, peer, Tag.BULK)
    finally:
        if dtype is not None:
            dtype.Free()  # MPI lets a pending transfer finish with it


def _is_plain(data: bytes, buffers: list[memoryview]) -> bool:
    return not buffers and len(data) <= MAX_COUNT


def send(comm, obj: Any, dest: int, tag: int) -> None:
    """Send ``obj`` of any size; the receiver completes it with :func:`received`.

    Raises:
        pickle.PicklingError, TypeError, AttributeError: ``obj`` cannot be
            pickled; nothing was sent.
    """
    from mpi4py import MPI

    data, buffers = dumps(obj)
    if _is_plain(data, buffers):
        comm.Send([data, MPI.BYTE], dest, tag)
        return
    comm.send(Bulk([len(data)] + [b.nbytes for b in buffers]), dest, tag)
    for part in (data, *buffers):
        _transfer(comm.Send, part, dest)


class Sends:
    """The requests of one message sent in parts; keeps its buffers alive."""

    def __init__(self, requests: list, keep: list):
        self.requests = requests
        self.keep = keep

    def Test(self) -> bool:
        from mpi4py import MPI

        if MPI.Request.Testall(self.requests):
            self.keep = []
            return True
        return False


def isend(comm, obj: Any, dest: int, tag: int):
    """Start sending ``obj`` of any size; return something to ``Test()``."""
    from mpi4py import MPI

    data, buffers = dumps(obj)
    if _is_plain(data, buffers):
        return comm.Isend([data, MPI.BYTE], dest, tag)
    requests = [comm.isend(Bulk([len(data)] + [b.nbytes for b in buffers]), dest, tag)]
    for part in (data, *buffers):
        requests.append(_transfer(comm.Isend, part, dest))
    return Sends(requests, [data, buffers])


def received(comm, obj: Any, source: int) -> Any:
    """Return the object of a message whose first part arrived as ``obj``."""
    if type(obj) is Bulk:
        return obj.receive(comm, source)
    return obj


class Parcel:
    """An object to pass through a collective (``gather``, ``scatter``).

    ``header`` goes through the collective: the object itself when it is
    small, else its :class:`Bulk` header, whose parts :meth:`send` then sends
    point to point (the receiver calls :func:`received`).
    """

    def __init__(self, obj: Any):
        data, buffers = dumps(obj)
        if _is_plain(data, buffers):
            self.header: Any = obj
            self.parts: list[Any] = []
        else:
            self.header = Bulk([len(data)] + [b.nbytes for b in buffers])
            self.parts = [data, *buffers]

    def send(self, comm, dest: int) -> None:
        for part in self.parts:
            _transfer(comm.Send, part, dest)

    def isend(self, comm, dest: int) -> list:
        return [_transfer(comm.Isend, part, dest) for part in self.parts]
