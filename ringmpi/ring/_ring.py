"""The rank/size ring, and a latency/bandwidth tool built on it."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence

from .. import __version__
from ..base.limits import MAX_COUNT
from ..harness import ArgumentParser, UsageError, arg_type, int_arg, plural, print_result
from ._buffers import RingError, Timing, neighbours, parse_size, parse_sweep, time_ring

PROG = "python -m ringmpi.ring"
#: Most trips and samples one may ask for: a hundred million trips of one
#: byte take minutes; more is a typo, not a measurement.
MAX_ROUNDS, MAX_REPEAT = 10**8, 10**4
#: Trips of a buffer without --rounds, and the bytes a sample moves at most then.
DEFAULT_ROUNDS, SAMPLE_BYTES = 1000, 1 << 30
#: Rank 0's memory for a message of N bytes, in N: the payload and a receive
#: buffer; with --pickle also the pickled copies (measured 5.1 at 512 MiB).
MEMORY_FACTOR = {False: 2, True: 6}


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


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="pass a message around the ranks; time it with --rounds/--size",
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-r",
        "--rounds",
        type=int_arg(1, MAX_ROUNDS),
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
        type=int_arg(1, MAX_REPEAT),
        default=5,
        metavar="N",
        help="timed samples per size (default 5)",
    )
    parser.add_argument(
        "--warmup",
        type=int_arg(0, MAX_ROUNDS),
        default=None,
        metavar="N",
        help="untimed trips before timing (default rounds/10, at most 100)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the result")
    return parser


def _table_head(header: str) -> str:
    return (
        f"# {header}\n"
        f"# {'size [B]':>10} {'hop [us]':>20} {'best [us]':>10} {'bandwidth [MB/s]':>17}"
    )


def _table_row(t: Timing) -> str:
    hop = f"{t.mean_us:.2f} ± {t.stdev_us:.2f}"
    return f"  {t.size:>10} {hop:>20} {t.min_us:>10.2f} {t.bandwidth_mbs:>17.2f}"


def _where(size: int, hosts: Sequence[str]) -> str:
    return f"ring of {plural(size, 'rank')} on {plural(len(set(hosts)), 'host')}"


def run_message(comm, args, hosts: Sequence[str] | None, report: dict) -> list[str]:
    """Pass the classic message (timed with ``--rounds``); return rank 0's lines."""
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    rounds = args.rounds or 1
    # Timed only with --rounds: then --repeat samples, as for buffers.
    samples = args.repeat if args.rounds else 1
    pass_message(comm, _warmup(args.warmup, rounds) if args.rounds else 0)
    hop_us = []
    message = None
    for _ in range(samples):
        start = MPI.Wtime()
        message = pass_message(comm, rounds)
        hop_us.append((MPI.Wtime() - start) / (rounds * size) * 1e6)
        if not comm.bcast(rank != 0 or message == expected_message(size), root=0):
            raise RingError(
                f"rank 0 received {message!r} from rank {size - 1}, "
                f"expected {expected_message(size)!r}"
            )
    if rank != 0:
        return []
    assert message is not None and hosts is not None
    timings = [Timing(size=len(message), hops=size, hop_us=hop_us)] if args.rounds else []
    report.update(mode="message", message=message, rounds=rounds, repeat=samples)
    report["timings"] = [t.as_dict() for t in timings]
    out = []
    if not args.quiet:
        out += [f"I am rank {r} of {size} on node {h}" for r, h in enumerate(hosts)]
        out.append(f'Processor 0 received message "{message}" from rank {size - 1}')
    elif not timings:
        out.append(message)
    if timings and not args.quiet:
        header = f"{_where(size, hosts)}: pickled message, {rounds} rounds x {samples} samples"
        out.append(_table_head(header))
    out += [_table_row(t) for t in timings]
    return out


def run_buffers(comm, args, sizes: Sequence[int], hosts: Sequence[str] | None, report: dict):
    """Time each buffer size; print each row as it is measured (unless --json)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    rounds = args.rounds or DEFAULT_ROUNDS
    report.update(mode="pickle" if args.pickle else "buffer", rounds=rounds, repeat=args.repeat)
    report["timings"] = []
    if rank == 0 and not args.json and not args.quiet:
        assert hosts is not None
        how = "pickled send/recv" if args.pickle else "buffer Send/Recv"
        fewer = (
            "" if args.rounds else f" (fewer above {SAMPLE_BYTES / DEFAULT_ROUNDS / 2**20:.0f} MiB)"
        )
        header = (
            f"{_where(size, hosts)}: {how}, "
            f"{plural(rounds, 'round')}{fewer} x {plural(args.repeat, 'sample')}"
        )
        print_result(_table_head(header))
    for nbytes in sizes:
        # By default a sample moves about SAMPLE_BYTES a hop, so that large
        # messages take seconds, not hours.
        these = args.rounds or max(1, min(DEFAULT_ROUNDS, SAMPLE_BYTES // nbytes))
        timing = time_ring(
            comm, nbytes, these, args.repeat, _warmup(args.warmup, these), args.pickle
        )
        if timing is not None:
            report["timings"].append({**timing.as_dict(), "rounds": these})
            if not args.json:
                print_result(_table_row(timing))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ring; see ``python -m ringmpi.ring --help``."""
    from mpi4py import MPI

    args = build_parser().parse_args(argv)
    if args.size is not None and args.sweep is not None:
        raise UsageError("use either --size or --sweep, not both")
    if args.pickle and args.size is None and args.sweep is None:
        raise UsageError("--pickle needs --size or --sweep")
    sizes = args.sweep or ([args.size] if args.size is not None else [])
    if args.pickle and sizes and max(sizes) > MAX_COUNT:
        raise UsageError(
            f"--pickle sends at most {MAX_COUNT} bytes in one message (mpi4py's pickled "
            "send counts in a C int); time larger buffers without --pickle"
        )

    comm = MPI.COMM_WORLD
    if sizes:
        _check_memory(comm, max(sizes), args.pickle)
    hosts = comm.gather(socket.gethostname(), root=0)
    report: dict[str, object] = {"program": "ring", "ranks": comm.Get_size()}
    if hosts is not None:
        report["hosts"] = sorted(set(hosts))
    if sizes:
        run_buffers(comm, args, sizes, hosts, report)
        out = []
    else:
        out = run_message(comm, args, hosts, report)
    if comm.Get_rank() != 0:
        return 0
    if args.json:
        print_result(json.dumps(report, indent=2))
    elif out:
        print_result("\n".join(out))
    return 0


def _check_memory(comm, nbytes: int, pickled: bool = False) -> None:
    """Refuse at once, on every rank, a message rank 0 could not hold."""
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    need = MEMORY_FACTOR[pickled] * nbytes
    if comm.bcast(need > memory if comm.Get_rank() == 0 else None, root=0):
        what = "its pickled copies" if pickled else "the payload and a receive buffer"
        raise UsageError(
            f"a message of {nbytes} bytes needs about {need / 2**30:.1f} GiB on rank 0 "
            f"({what}); this machine has {memory / 2**30:.1f} GiB"
        )


def _warmup(requested: int | None, rounds: int) -> int:
    return requested if requested is not None else min(100, max(1, rounds // 10))
