"""Timing buffers around the ring: sizes, payloads, and messages of any size.

Memory stays near the message size: rank 0 holds the payload and a receive
buffer (2x), the others one buffer, and payloads are checked piece by piece.
Buffers of 2 GiB or more travel as one derived datatype, since an MPI count
is a C int.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..base.errors import RingmpiError, TooLarge, parse_int, quoted
from ..base.limits import buffer_spec

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
#: The payload repeats 0..250, a prime period, so shifted data shows.
PERIOD = 251
#: Checked in pieces of this many bytes, to need little memory.
CHECK_PIECE = 16 << 20


class RingError(RingmpiError):
    """The message that came back around the ring is not the one sent."""

    collective = True


@dataclass
class Timing:
    """Time per hop around the ring for one message size."""

    size: int
    hops: int
    hop_us: list[float]

    @property
    def mean_us(self) -> float:
        return statistics.fmean(self.hop_us)

    @property
    def stdev_us(self) -> float:
        return statistics.stdev(self.hop_us) if len(self.hop_us) > 1 else 0.0

    @property
    def min_us(self) -> float:
        return min(self.hop_us)

    @property
    def bandwidth_mbs(self) -> float:
        """Bytes per microsecond of the best hop time, i.e. MB/s."""
        return self.size / self.min_us if self.size else 0.0

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.update(
            hop_us_mean=self.mean_us,
            hop_us_stdev=self.stdev_us,
            hop_us_min=self.min_us,
            bandwidth_MBps=self.bandwidth_mbs,
        )
        return data


def parse_size(text: str) -> int:
    """Parse a message size such as ``64``, ``1K``, ``4M``, ``1GiB``.

    Suffixes are binary: ``1K`` is 1024 bytes.

    Raises:
        ValueError: The text is not a size, or the size is not positive.
    """
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"invalid size {quoted(text)}: use a number of bytes such as 64, 1K, 4M")
    try:
        count = parse_int(match.group(1))
    except TooLarge:
        raise ValueError(f"invalid size {quoted(text)}: too large") from None
    except ValueError:
        raise ValueError(f"invalid size {quoted(text)}: use a number of bytes such as 64") from None
    size = count * _SCALE[match.group(2).lower()]
    if size < 1:
        raise ValueError(f"invalid size {quoted(text)}: must be at least 1 byte")
    return size


def parse_sweep(text: str) -> list[int]:
    """Parse ``MIN:MAX`` into the powers of two from MIN up to MAX.

    Raises:
        ValueError: Malformed, or MIN greater than MAX.
    """
    lo_text, sep, hi_text = text.partition(":")
    if not sep:
        raise ValueError(f"invalid sweep {quoted(text)}: use MIN:MAX, such as 1:4M")
    lo, hi = parse_size(lo_text), parse_size(hi_text)
    if lo > hi:
        raise ValueError(f"invalid sweep {quoted(text)}: MIN is larger than MAX")
    sizes = []
    size = lo
    while size <= hi:
        sizes.append(size)
        size *= 2
    if sizes[-1] != hi:
        sizes.append(hi)
    return sizes


def neighbours(rank: int, size: int) -> tuple[int, int]:
    """Return ``(source, dest)``: the ranks this one receives from and sends to."""
    return (rank - 1) % size, (rank + 1) % size


def pattern(nbytes: int, offset: int = 0) -> np.ndarray:
    """Return the payload bytes ``offset .. offset + nbytes``: ``i % 251``."""
    tile = np.roll(np.arange(PERIOD, dtype=np.uint8), -(offset % PERIOD))
    return np.tile(tile, -(-nbytes // PERIOD))[:nbytes]


def intact(buf: np.ndarray) -> bool:
    """Return whether ``buf`` holds the payload, checking piece by piece."""
    return all(
        np.array_equal(
            buf[start : start + CHECK_PIECE], pattern(min(CHECK_PIECE, buf.size - start), start)
        )
        for start in range(0, buf.size, CHECK_PIECE)
    )


def time_ring(
    comm,
    nbytes: int,
    rounds: int,
    repeat: int = 1,
    warmup: int = 10,
    pickled: bool = False,
) -> Timing | None:
    """Time a numpy buffer of ``nbytes`` passing around the ring.

    Buffers move with ``Send``/``Recv`` (``Sendrecv`` with one rank), or
    pickled with ``send``/``recv`` when ``pickled``. Rank 0's payload is
    forwarded round the ring; every rank checks what it received after timing.

    Args:
        comm: The communicator.
        nbytes: Message size in bytes.
        rounds: Trips around the ring in each timed sample.
        repeat: Number of timed samples.
        warmup: Untimed trips before the first sample.
        pickled: Move the array as a pickled object instead of a buffer.

    Returns:
        On rank 0 the timing; None elsewhere.

    Raises:
        RingError: On every rank, when a payload arrived changed.
    """
    from mpi4py import MPI

    size = comm.Get_size()
    trip = _Trip(comm, nbytes, pickled)
    try:
        for _ in range(warmup):
            trip()
        samples = []
        for _ in range(repeat):
            comm.Barrier()
            start = MPI.Wtime()
            for _ in range(rounds):
                trip()
            samples.append((MPI.Wtime() - start) / (rounds * size) * 1e6)
    finally:
        trip.free()
    if not comm.allreduce(intact(np.asarray(trip.recvbuf)), op=MPI.LAND):
        raise RingError(f"a {nbytes}-byte payload arrived changed")
    if comm.Get_rank() != 0:
        return None
    return Timing(size=nbytes, hops=size, hop_us=samples)


class _Trip:
    """One trip of rank 0's payload around the ring, as a callable.

    Rank 0 fills its buffer (pages never written would be the kernel's shared
    zero page, which flatters single-copy bandwidth); the others forward what
    they receive, so the payload goes all the way round. Buffer specs are
    made once: mpi4py need not work the datatype out per call.
    """

    def __init__(self, comm, nbytes: int, pickled: bool):
        self.comm, self.pickled = comm, pickled
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.source, self.dest = neighbours(self.rank, self.size)
        self.recvbuf: Any = np.zeros(nbytes, np.uint8)
        first = self.rank == 0 or self.size == 1
        self.sendbuf = pattern(nbytes) if first else self.recvbuf
        self.send_spec, self.send_type = buffer_spec(self.sendbuf)
        self.recv_spec, self.recv_type = buffer_spec(self.recvbuf)

    def __call__(self) -> None:
        comm, source, dest = self.comm, self.source, self.dest
        if self.pickled:
            if self.rank == 0:
                self.recvbuf = comm.sendrecv(self.sendbuf, dest=dest, source=source)
            else:
                self.recvbuf = comm.recv(source=source)
                comm.send(self.recvbuf, dest=dest)
        elif self.size == 1:
            comm.Sendrecv(self.send_spec, dest, 0, self.recv_spec, source, 0)
        elif self.rank == 0:
            comm.Send(self.send_spec, dest, 0)
            comm.Recv(self.recv_spec, source, 0)
        else:
            comm.Recv(self.recv_spec, source, 0)
            comm.Send(self.send_spec, dest, 0)

    def free(self) -> None:
        for dtype in (self.send_type, self.recv_type):
            if dtype is not None:
                dtype.Free()
