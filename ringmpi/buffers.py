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

from .errors import RingmpiError

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
#: The payload repeats 0..250, a prime period, so shifted data shows.
PERIOD = 251
#: Checked in pieces of this many bytes, to need little memory.
CHECK_PIECE = 16 << 20
#: The largest count an MPI call takes (a C int).
MAX_COUNT = (1 << 31) - 1


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
        raise ValueError(f"invalid size {text!r}: use a number of bytes such as 64, 1K, 4M")
    size = int(match.group(1)) * _SCALE[match.group(2).lower()]
    if size < 1:
        raise ValueError(f"invalid size {text!r}: must be at least 1 byte")
    return size


def parse_sweep(text: str) -> list[int]:
    """Parse ``MIN:MAX`` into the powers of two from MIN up to MAX.

    Raises:
        ValueError: Malformed, or MIN greater than MAX.
    """
    lo_text, sep, hi_text = text.partition(":")
    if not sep:
        raise ValueError(f"invalid sweep {text!r}: use MIN:MAX, such as 1:4M")
    lo, hi = parse_size(lo_text), parse_size(hi_text)
    if lo > hi:
        raise ValueError(f"invalid sweep {text!r}: MIN is larger than MAX")
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


def buffer_spec(buf: np.ndarray) -> tuple[list, Any]:
    """Return an mpi4py buffer spec for ``buf``, and a datatype to free after.

    Up to ``MAX_COUNT`` bytes: ``[buf, MPI.BYTE]``. Beyond, one derived
    datatype: a contiguous run of 1 MiB blocks, plus the remaining bytes.
    """
    from mpi4py import MPI

    nbytes = buf.nbytes
    if nbytes <= MAX_COUNT:
        return [buf, MPI.BYTE], None
    block = 1 << 20
    count, rest = divmod(nbytes, block)
    blocks = MPI.BYTE.Create_contiguous(block)
    body = blocks.Create_contiguous(count)
    blocks.Free()
    if rest:
        dtype = MPI.Datatype.Create_struct([1, rest], [0, count * block], [body, MPI.BYTE])
        body.Free()
    else:
        dtype = body
    dtype.Commit()
    return [buf, 1, dtype], dtype


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

    rank, size = comm.Get_rank(), comm.Get_size()
    source, dest = neighbours(rank, size)
    # Rank 0 fills its buffer (pages never written would be the kernel's
    # shared zero page, which flatters single-copy bandwidth); the others
    # forward what they receive, so the payload goes all the way round.
    recvbuf = np.zeros(nbytes, np.uint8)
    sendbuf = pattern(nbytes) if rank == 0 or size == 1 else recvbuf
    # Typed specs made once: mpi4py need not work the datatype out per call.
    send_spec, send_type = buffer_spec(sendbuf)
    recv_spec, recv_type = buffer_spec(recvbuf)
    if pickled:

        def trip() -> None:
            nonlocal recvbuf
            if rank == 0:
                recvbuf = comm.sendrecv(sendbuf, dest=dest, source=source)
            else:
                recvbuf = comm.recv(source=source)
                comm.send(recvbuf, dest=dest)

    elif size == 1:

        def trip() -> None:
            comm.Sendrecv(send_spec, dest, 0, recv_spec, source, 0)

    elif rank == 0:

        def trip() -> None:
            comm.Send(send_spec, dest, 0)
            comm.Recv(recv_spec, source, 0)

    else:

        def trip() -> None:
            comm.Recv(recv_spec, source, 0)
            comm.Send(send_spec, dest, 0)

    for _ in range(warmup):
        trip()
    samples = []
    for _ in range(repeat):
        comm.Barrier()
        start = MPI.Wtime()
        for _ in range(rounds):
            trip()
        elapsed = MPI.Wtime() - start
        samples.append(elapsed / (rounds * size) * 1e6)
    for dtype in (send_type, recv_type):
        if dtype is not None:
            dtype.Free()
    if not comm.allreduce(intact(np.asarray(recvbuf)), op=MPI.LAND):
        raise RingError(f"a {nbytes}-byte payload arrived changed")
    if rank != 0:
        return None
    return Timing(size=nbytes, hops=size, hop_us=samples)
