"""Messages of any size between the farm's ranks.

An object is pickled once with protocol 5, into a list of parts: the pickler
hands large ``bytes`` payloads over as they are (no copy into the stream),
and numpy arrays (any object that pickles its data as a ``PickleBuffer``) of
at least ``OOB_MIN`` bytes go out-of-band. A message with nothing large in it
travels as one ordinary pickled message, byte for byte what ``comm.send``
would send, so small tasks cost what they always did and ``Message.recv()``
reads it. A large one travels in parts:

* on the message's own tag, a small :class:`Bulk` header: the sizes of the
  parts to follow;
* on ``Tag.BULK``, from the same sender, the pickle stream in segments (its
  large payloads sent from the sender's own objects, the rest joined) and then
  each out-of-band buffer, as raw messages of any size (past 2 GiB as one
  derived datatype, see :func:`ringmpi.base.limits.buffer_spec`).

The receiver gets each out-of-band buffer straight into the memory of the
array it unpickles (no copy), and the stream into one buffer that it
unpickles (a ``bytes`` payload is copied out of it once). Receive buffers
come from :data:`RECYCLER`, which writes into the memory of an array the
caller has already dropped, when one of the same size is free.
"""

from __future__ import annotations

import pickle
import sys
import threading
from typing import Any

import numpy as np

from ..base.limits import MAX_COUNT, buffer_spec
from ._outcome import Tag

#: Buffers and payloads smaller than this stay in the pickle stream.
OOB_MIN = 1 << 20


class Recycler:
    """Receive buffers of at least ``OOB_MIN`` bytes, reused once dropped.

    Memory the process has never written costs the kernel a page fault and a
    page of zeros per page, which halves the speed at which large results
    arrive. So buffers come from arrays kept here, and once nothing made
    from one is left (the caller dropped the result), the next buffer of
    that size is written into the same memory, in this farm or the next. At
    most ``keep`` dropped buffers and ``keep_bytes`` bytes of them are kept;
    the rest go back to the system.

    "Nothing left" is told by reference count: numpy points every array made
    from a buffer at the array that owns the memory (it skips views), so that
    owner's count is the only witness; a weak reference to a view is not.
    """

    def __init__(self, keep: int = 4, keep_bytes: int = 512 << 20):
        self.keep = keep
        self.keep_bytes = keep_bytes
        self._held: list[np.ndarray] = []
        # Farms in two threads (an executor beside a farm) take at once.
        self._lock = threading.Lock()
        probe = [np.empty(0, dtype=np.uint8)]
        #: the count of an array referred to only from ``_held``, seen from _free
        self._alone = self._count(probe, 0)

    @staticmethod
    def _count(held: list[np.ndarray], i: int) -> int:
        return sys.getrefcount(held[i])

    def _free(self, i: int) -> bool:
        return self._count(self._held, i) <= self._alone

    def take(self, size: int) -> np.ndarray:
        """Return a writable buffer of ``size`` bytes."""
        if size < OOB_MIN:
            return np.empty(size, dtype=np.uint8)
        with self._lock:
            for i in range(len(self._held)):
                if self._held[i].nbytes == size and self._free(i):
                    return self._held[i]
            self._release(keep=self.keep - 1, keep_bytes=max(0, self.keep_bytes - size))
            self._held.append(np.empty(size, dtype=np.uint8))
            return self._held[-1]

    def release(self, keep: int = 0, keep_bytes: int = 0) -> None:
        """Let go of dropped buffers past ``keep`` of them or ``keep_bytes`` bytes."""
        with self._lock:
            self._release(keep, keep_bytes)

    def _release(self, keep: int, keep_bytes: int) -> None:
        count = total = 0
        for i in reversed(range(len(self._held))):  # the newest are kept
            if not self._free(i):
                continue
            nbytes = self._held[i].nbytes
            if count < keep and total + nbytes <= keep_bytes:
                count, total = count + 1, total + nbytes
            else:
                del self._held[i]

    def __len__(self) -> int:
        return len(self._held)


#: The receive buffers of this process's farms.
RECYCLER = Recycler()


class Bulk:
    """The header of a message sent in parts: the pickle stream in segments of
    ``stream`` bytes, then one out-of-band buffer of each of ``buffers`` bytes."""

    __slots__ = ("buffers", "stream")

    def __init__(self, stream: list[int], buffers: list[int]):
        self.stream = stream
        self.buffers = buffers

    def __reduce__(self):
        return (Bulk, (self.stream, self.buffers))

    def receive(self, comm, source: int, salvaging: bool = False) -> Any:
        """Receive the parts from ``source`` and return the object (or, if
        ``salvaging`` and unpickling raised, a :class:`Salvaged`)."""
        data = np.empty(sum(self.stream), dtype=np.uint8)
        offset = 0
        for size in self.stream:
            _transfer(comm.Recv, data[offset : offset + size], source)
            offset += size
        buffers = [RECYCLER.take(size) for size in self.buffers]
        for buffer in buffers:
            _transfer(comm.Recv, buffer, source)
        if salvaging:
            return _load_salvaging(data.data, buffers)
        return pickle.loads(data.data, buffers=buffers)


class _Parts:
    """A file for ``pickle.dump``: keeps what the pickler writes, uncopied."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[Any] = []

    def write(self, data: Any) -> int:
        if type(data) is not bytes:  # a large in-band buffer, as a PickleBuffer
            data = memoryview(data).cast("B")
        self.parts.append(data)
        return len(data)


def dumps(obj: Any) -> tuple[list[Any], list[memoryview]]:
    """Pickle ``obj``; return the stream's segments and the out-of-band buffers.

    One segment when nothing large is in the stream; else the large payloads
    each alone, and the small pieces between them joined.
    """
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

    file = _Parts()
    pickle.dump(obj, file, pickle.HIGHEST_PROTOCOL, buffer_callback=out_of_band)
    parts = file.parts
    if len(parts) == 1:
        return parts, buffers
    segments: list[Any] = []
    small: list[Any] = []
    for part in parts:
        if len(part) < OOB_MIN:
            small.append(part)
            continue
        if small:
            segments.append(b"".join(small))
            small = []
        segments.append(part)
    if small:
        segments.append(b"".join(small))
    return segments, buffers


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


def _is_plain(segments: list[Any], buffers: list[memoryview]) -> bool:
    return not buffers and len(segments) == 1 and len(segments[0]) <= MAX_COUNT


def _header(segments: list[Any], buffers: list[memoryview]) -> Bulk:
    return Bulk([len(s) for s in segments], [b.nbytes for b in buffers])


def send(comm, obj: Any, dest: int, tag: int) -> None:
    """Send ``obj`` of any size; the receiver completes it with :func:`received`.

    Raises:
        pickle.PicklingError, TypeError, AttributeError: ``obj`` cannot be
            pickled; nothing was sent.
    """
    from mpi4py import MPI

    segments, buffers = dumps(obj)
    if _is_plain(segments, buffers):
        comm.Send([segments[0], MPI.BYTE], dest, tag)
        return
    comm.send(_header(segments, buffers), dest, tag)
    for part in (*segments, *buffers):
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


def isend(comm, obj: Any, dest: int, tag: int, sizes: list[int] | None = None):
    """Start sending ``obj`` of any size; return something to ``Test()``.

    ``sizes``, if given, gets the message's size in bytes appended.
    """
    from mpi4py import MPI

    segments, buffers = dumps(obj)
    if sizes is not None:
        sizes.append(sum(len(s) for s in segments) + sum(b.nbytes for b in buffers))
    if _is_plain(segments, buffers):
        return comm.Isend([segments[0], MPI.BYTE], dest, tag)
    requests = [comm.isend(_header(segments, buffers), dest, tag)]
    for part in (*segments, *buffers):
        requests.append(_transfer(comm.Isend, part, dest))
    return Sends(requests, [segments, buffers])


class Unreadable:
    """In a :class:`Salvaged` object, what raised as it was unpickled."""

    def __new__(cls, *args: Any, **kwargs: Any):
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class Salvaged:
    """A message whose unpickling raised ``error``, read again with an
    :class:`Unreadable` in place of each object that raised (``unreadable``,
    with the exception of each)."""

    def __init__(self, obj: Any, unreadable: dict[int, tuple[Unreadable, BaseException]], error):
        self.obj, self.unreadable, self.error = obj, unreadable, error


class _Salvager(pickle.Unpickler):
    """Unpickles what it can: each callable that raises gives an :class:`Unreadable`."""

    def __init__(self, file, buffers):
        super().__init__(file, buffers=buffers)
        self.unreadable: dict[int, tuple[Unreadable, BaseException]] = {}

    def _failed(self, exc: BaseException, kind: type[Unreadable] = Unreadable) -> Unreadable:
        placeholder = object.__new__(kind)
        self.unreadable[id(placeholder)] = (placeholder, exc)
        return placeholder

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = super().find_class(module, name)
        except BaseException as exc:  # missing here: its instances are unreadable
            salvager, missing = self, exc

            class Missing(Unreadable):
                def __new__(cls, *args: Any, **kwargs: Any):
                    return salvager._failed(missing, cls)

            Missing.__qualname__ = Missing.__name__ = name
            return Missing
        if isinstance(found, type):
            return found

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return found(*args, **kwargs)
            except BaseException as exc:
                return self._failed(exc)

        return guarded


def _load_salvaging(data: Any, buffers: list[Any] | None) -> Any:
    import io

    try:
        return pickle.loads(data, buffers=buffers)
    except BaseException as exc:  # whatever the user's code raised
        error = exc
    try:
        salvager = _Salvager(io.BytesIO(data), buffers)
        obj = salvager.load()
    except BaseException:
        raise error from None
    if not salvager.unreadable:
        raise error
    return Salvaged(obj, salvager.unreadable, error)


def receive_salvaging(comm, message, status) -> Any:
    """Receive a matched message whose first part is ``message``, as
    ``received(comm, message.recv(), source)`` would; if unpickling it raises,
    return what could be read as a :class:`Salvaged`.

    Raises:
        BaseException: What unpickling raised, when nothing could be salvaged.
    """
    from mpi4py import MPI

    data = bytearray(status.Get_count(MPI.BYTE))
    message.Recv([data, MPI.BYTE])
    obj = _load_salvaging(data, None)
    if type(obj) is Bulk:
        return obj.receive(comm, status.Get_source(), salvaging=True)
    return obj


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
        segments, buffers = dumps(obj)
        if _is_plain(segments, buffers):
            self.header: Any = obj
            self.parts: list[Any] = []
        else:
            self.header = _header(segments, buffers)
            self.parts = [*segments, *buffers]

    def send(self, comm, dest: int) -> None:
        for part in self.parts:
            _transfer(comm.Send, part, dest)

    def isend(self, comm, dest: int) -> list:
        return [_transfer(comm.Isend, part, dest) for part in self.parts]
