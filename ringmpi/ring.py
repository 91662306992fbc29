"""The rank/size ring, and a latency/bandwidth tool built on it."""

from __future__ import annotations

import json
import re
import socket
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from . import __version__
from .harness import (
    ArgumentParser,
    RingmpiError,
    UsageError,
    arg_type,
    int_arg,
    launch,
    plural,
    print_result,
)

PROG = "python -m ringmpi.ring"

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


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


def expected_message(size: int) -> str:
    """Return the message that comes back to rank 0 around a ring of ``size``."""
    return "".join(f"P{rank}" for rank in range(size))


def pass_message(comm, rounds: int = 1) -> str | None:
    """Pass the classic message around the ring ``rounds`` times.

    Rank 0 sends ``P0``; each rank appends ``P<rank>`` and passes it on.

    Args:
        comm: The communicator.
        rounds: How many times the message goes around.

    Returns:
        On rank 0 the message that came back last; None elsewhere.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    source, dest = neighbours(rank, size)
    message = None
    for _ in range(rounds):
        if rank == 0:
            message = comm.sendrecv("P0", dest=dest, source=source)
        else:
            message = comm.recv(source=source)
            comm.send(message + f"P{rank}", dest=dest)
    return message if rank == 0 else None


def _pattern(nbytes: int) -> np.ndarray:
    return (np.arange(nbytes, dtype=np.uint32) % 251).astype(np.uint8)


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
    expected = _pattern(nbytes)
    recvbuf = np.zeros(nbytes, np.uint8)
    sendbuf = expected if rank == 0 or size == 1 else recvbuf
    # Typed specs made once: mpi4py need not work the datatype out per call.
    send_spec, recv_spec = [sendbuf, MPI.BYTE], [recvbuf, MPI.BYTE]
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
    intact = comm.allreduce(bool(np.array_equal(recvbuf, expected)), op=MPI.LAND)
    if not intact:
        raise RingError(f"a {nbytes}-byte payload arrived changed")
    if rank != 0:
        return None
    return Timing(size=nbytes, hops=size, hop_us=samples)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="pass a message around the ranks; time it with --rounds/--size",
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-r",
        "--rounds",
        type=int_arg(1),
        default=None,
        help="timed trips around the ring (default 1 for the classic message, "
        "1000 with --size/--sweep)",
    )
    parser.add_argument(
        "-s",
        "--size",
        type=arg_type(parse_size),
        default=None,
        help="pass a numpy buffer of this many bytes (64, 1K, 4M) instead of the classic message",
    )
    parser.add_argument(
        "--sweep",
        type=arg_type(parse_sweep),
        default=None,
        metavar="MIN:MAX",
        help="time every power-of-two size from MIN to MAX (e.g. 1:4M)",
    )
    parser.add_argument(
        "-p",
        "--pickle",
        action="store_true",
        help="move buffers as pickled objects (send/recv) instead of Send/Recv",
    )
    parser.add_argument(
        "--repeat",
        type=int_arg(1),
        default=5,
        metavar="N",
        help="timed samples per size (default 5)",
    )
    parser.add_argument(
        "--warmup",
        type=int_arg(0),
        default=None,
        metavar="N",
        help="untimed trips before timing (default rounds/10, at most 100)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the result")
    return parser


def _format_table(timings: list[Timing], header: list[str], quiet: bool) -> str:
    lines = [] if quiet else [f"# {line}" for line in header]
    if not quiet:
        lines.append(
            f"# {'size [B]':>10} {'hop [us]':>20} {'best [us]':>10} {'bandwidth [MB/s]':>17}"
        )
    for t in timings:
        hop = f"{t.mean_us:.2f} ± {t.stdev_us:.2f}"
        lines.append(f"  {t.size:>10} {hop:>20} {t.min_us:>10.2f} {t.bandwidth_mbs:>17.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ring; see ``python -m ringmpi.ring --help``."""
    from mpi4py import MPI

    args = build_parser().parse_args(argv)
    if args.size is not None and args.sweep is not None:
        raise UsageError("use either --size or --sweep, not both")
    if args.pickle and args.size is None and args.sweep is None:
        raise UsageError("--pickle needs --size or --sweep")

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    hosts = comm.gather(socket.gethostname(), root=0)
    sizes = args.sweep or ([args.size] if args.size is not None else [])

    report: dict[str, object] = {"program": "ring", "ranks": size}
    if rank == 0:
        assert hosts is not None
        report["hosts"] = sorted(set(hosts))
    timings: list[Timing] = []
    if not sizes:
        rounds = args.rounds or 1
        # Timed only with --rounds: then --repeat samples, as for buffers.
        samples = args.repeat if args.rounds else 1
        pass_message(comm, _warmup(args.warmup, rounds) if args.rounds else 0)
        hop_us = []
        for _ in range(samples):
            start = MPI.Wtime()
            message = pass_message(comm, rounds)
            hop_us.append((MPI.Wtime() - start) / (rounds * size) * 1e6)
            if not comm.bcast(rank != 0 or message == expected_message(size), root=0):
                raise RingError(
                    f"rank 0 received {message!r} from rank {size - 1}, "
                    f"expected {expected_message(size)!r}"
                )
        if rank == 0:
            assert message is not None
            report.update(mode="message", message=message, rounds=rounds, repeat=samples)
            if args.rounds:
                timings.append(Timing(size=len(message), hops=size, hop_us=hop_us))
    else:
        rounds = args.rounds or 1000
        for nbytes in sizes:
            timing = time_ring(
                comm, nbytes, rounds, args.repeat, _warmup(args.warmup, rounds), args.pickle
            )
            if timing is not None:
                timings.append(timing)
        report.update(mode="pickle" if args.pickle else "buffer", rounds=rounds, repeat=args.repeat)

    if rank != 0:
        return 0
    assert hosts is not None
    report["timings"] = [t.as_dict() for t in timings]
    if args.json:
        print_result(json.dumps(report, indent=2))
        return 0
    out = []
    if report["mode"] == "message":
        if not args.quiet:
            out += [f"I am rank {r} of {size} on node {h}" for r, h in enumerate(hosts)]
            out.append(f'Processor 0 received message "{message}" from rank {size - 1}')
        elif not timings:
            out.append(str(message))
        header = [
            f"ring of {plural(size, 'rank')} on {plural(len(set(hosts)), 'host')}: "
            f"pickled message, {rounds} rounds x {samples} samples"
        ]
    else:
        how = "pickled send/recv" if args.pickle else "buffer Send/Recv"
        header = [
            f"ring of {plural(size, 'rank')} on {plural(len(set(hosts)), 'host')}: {how}, "
            f"{plural(rounds, 'round')} x {plural(args.repeat, 'sample')}"
        ]
    if timings:
        out.append(_format_table(timings, header, args.quiet))
    print_result("\n".join(out))
    return 0


def _warmup(requested: int | None, rounds: int) -> int:
    return requested if requested is not None else min(100, max(1, rounds // 10))


if __name__ == "__main__":
    sys.exit(launch(main))
