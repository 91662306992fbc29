"""The ring benchmark: ringmpi's ring beside mpi4py.bench ringtest and pingpong."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..ring import time_ring

#: Default sizes: powers of 4 from 1 B to 4 MiB.
DEFAULT_SIZES = [4**k for k in range(12)]
QUICK_SIZES = [1, 1024, 64 * 1024]


def rounds_for(nbytes: int, quick: bool = False) -> int:
    """Return the timed trips for a message size: fewer for big messages."""
    if quick:
        return 20 if nbytes <= 16384 else 5
    if nbytes <= 16384:
        return 2000
    if nbytes <= 1 << 20:
        return 200
    return 40


def _best_mean(samples: list[float]) -> tuple[float, float]:
    return min(samples), statistics.fmean(samples)


def ringtest_hop(comm, nbytes: int, rounds: int, warmup: int) -> float:
    """Run ``mpi4py.bench.ringtest`` and return its time per hop in µs.

    ringtest times whole loops round the ring; one hop is a loop over the
    number of ranks.
    """
    from mpi4py import bench

    args = ["-n", str(nbytes), "-l", str(rounds), "-s", str(warmup)]
    elapsed = bench.ringtest(comm, args, verbose=False)
    elapsed = comm.bcast(elapsed, root=0)
    return elapsed / rounds / comm.Get_size() * 1e6


def pingpong_oneway(comm, nbytes: int, rounds: int, warmup: int) -> float:
    """Run ``mpi4py.bench.pingpong`` at one size; return its mean one-way time in µs.

    Its buffers come from ``numpy.empty`` and are never written.
    """
    from mpi4py import bench

    n = str(nbytes)
    loops = str(rounds)
    skips = str(warmup)
    args = ["-m", n, "-n", n, "-l", loops, "-s", skips]
    args += ["--loop-large", loops, "--skip-large", skips, "--loop-huge", loops]
    args += ["--skip-huge", skips]
    result = bench.pingpong(comm, args, verbose=False)
    _, mean, _ = result[0]
    return comm.bcast(mean, root=0) * 1e6


def pingpong_filled_oneway(comm, nbytes: int, rounds: int, warmup: int) -> float:
    """The same ping-pong as ``mpi4py.bench.pingpong``, but with written buffers.

    Returns:
        The mean one-way time in µs (the same on every rank).
    """
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    sendbuf = np.full(nbytes, 42, np.uint8)
    recvbuf = np.ones(nbytes, np.uint8)
    # Explicit [buffer, count, type] as mpi4py.bench does: a bare array makes
    # mpi4py work out the datatype from its format at every call.
    smsg = [sendbuf, nbytes, MPI.BYTE]
    rmsg = [recvbuf, nbytes, MPI.BYTE]
    times = []
    comm.Barrier()
    for i in range(rounds + warmup):
        start = MPI.Wtime()
        if size == 1:
            comm.Sendrecv(smsg, 0, 0, rmsg, 0, 0)
            comm.Sendrecv(smsg, 0, 0, rmsg, 0, 0)
        elif rank == 0:
            comm.Send(smsg, 1, 0)
            comm.Recv(rmsg, 1, 0)
        elif rank == 1:
            comm.Recv(rmsg, 0, 0)
            comm.Send(smsg, 0, 0)
        if i >= warmup:
            times.append((MPI.Wtime() - start) / 2)
    if rank < 2 and not np.array_equal(recvbuf, sendbuf):
        raise RuntimeError("the ping-pong payload arrived changed")
    return comm.bcast(statistics.fmean(times) * 1e6, root=0)


def run_benchmark(
    comm,
    sizes: Sequence[int],
    repeat: int,
    quick: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Time every method at every size, ``repeat`` times each, in turn; collective.

    Methods: ringmpi's ring with buffers and pickled, ``mpi4py.bench
    ringtest`` (per hop = per loop / ranks), ``mpi4py.bench pingpong``
    (never-written buffers) and the same ping-pong with written buffers.

    Returns:
        On rank 0 the report (see ``main``); None elsewhere.
    """
    rank = comm.Get_rank()
    # Untimed: the first messages between two ranks set up their connection.
    for pickled in (False, True):
        time_ring(comm, max(sizes), 2, 1, 2, pickled=pickled)
    ringtest_hop(comm, max(sizes), 2, 2)
    pingpong_oneway(comm, max(sizes), 2, 2)
    pingpong_filled_oneway(comm, max(sizes), 2, 2)
    rows = []
    for nbytes in sizes:
        rounds = rounds_for(nbytes, quick)
        warmup = max(1, rounds // 10)
        if log is not None and rank == 0:
            log(f"size {nbytes} B, {rounds} rounds x {repeat}")
        samples = _samples(comm, nbytes, rounds, warmup, repeat)
        rows.append(_row(nbytes, rounds, samples))
    if rank != 0:
        return None
    return {
        "benchmark": "ring",
        "ranks": comm.Get_size(),
        "repeat": repeat,
        "quick": quick,
        "rows": rows,
    }


def _samples(comm, nbytes: int, rounds: int, warmup: int, repeat: int) -> dict[str, list[float]]:
    """Time every method at one size ``repeat`` times, in turn; collective. µs per method."""
    samples: dict[str, list[float]] = {
        "ring": [],
        "ring_pickle": [],
        "ringtest": [],
        "pingpong": [],
        "pingpong_filled": [],
    }
    for _ in range(repeat):
        t = time_ring(comm, nbytes, rounds, 1, warmup, pickled=False)
        samples["ring"].append(comm.bcast(t.hop_us[0] if t else None, root=0))
        t = time_ring(comm, nbytes, rounds, 1, warmup, pickled=True)
        samples["ring_pickle"].append(comm.bcast(t.hop_us[0] if t else None, root=0))
        samples["ringtest"].append(ringtest_hop(comm, nbytes, rounds, warmup))
        samples["pingpong"].append(pingpong_oneway(comm, nbytes, rounds, warmup))
        samples["pingpong_filled"].append(pingpong_filled_oneway(comm, nbytes, rounds, warmup))
    return samples


def _row(nbytes: int, rounds: int, samples: dict[str, list[float]]) -> dict[str, Any]:
    """One size's row: best and mean time and bandwidth per method, and their ratios."""
    row: dict[str, Any] = {"size": nbytes, "rounds": rounds}
    for method, values in samples.items():
        best, mean = _best_mean(values)
        row[method] = {
            "us_min": best,
            "us_mean": mean,
            "samples_us": values,
            "bandwidth_MBps": nbytes / best,
        }
    row["hop_ratio_ringtest"] = row["ring"]["us_min"] / row["ringtest"]["us_min"]
    row["pickle_ratio"] = row["ring_pickle"]["us_min"] / row["ring"]["us_min"]
    row["bw_ratio_pingpong"] = row["ring"]["bandwidth_MBps"] / row["pingpong"]["bandwidth_MBps"]
    row["bw_ratio_pingpong_filled"] = (
        row["ring"]["bandwidth_MBps"] / row["pingpong_filled"]["bandwidth_MBps"]
    )
    return row


def format_report(report: dict[str, Any], quiet: bool = False) -> str:
    """Return the fixed-width, ``#``-headed tables of a ring report."""
    lines = []
    if not quiet:
        lines.append(
            f"# ringmpi.bench ring: {report['ranks']} ranks, "
            + ("1 sample" if report["repeat"] == 1 else f"best of {report['repeat']} samples")
            + " per method; hop = one message between neighbours"
            + (" (quick: results checked, timings not compared)" if report["quick"] else "")
        )
        lines.append(
            "# ring = ringmpi buffer Send/Recv; ringtest = mpi4py.bench ringtest (per loop / "
            "ranks); pingpong = mpi4py.bench pingpong (one-way, never-written buffers); "
            "filled = same ping-pong, written buffers"
        )
    lines.append("# latency")
    lines.append(
        f"# {'size [B]':>10} {'ring [us]':>10} {'ringtest [us]':>13} {'ratio':>6} "
        f"{'pickle [us]':>11} {'ratio':>6} {'pingpong [us]':>13} {'filled [us]':>11}"
    )
    for r in report["rows"]:
        lines.append(
            f"  {r['size']:>10} {r['ring']['us_min']:>10.2f} {r['ringtest']['us_min']:>13.2f} "
            f"{r['hop_ratio_ringtest']:>6.2f} {r['ring_pickle']['us_min']:>11.2f} "
            f"{r['pickle_ratio']:>6.2f} {r['pingpong']['us_min']:>13.2f} "
            f"{r['pingpong_filled']['us_min']:>11.2f}"
        )
    lines.append("# bandwidth [MB/s]")
    lines.append(
        f"# {'size [B]':>10} {'ring':>10} {'pickle':>10} {'ringtest':>10} {'pingpong':>10} "
        f"{'ratio':>6} {'filled':>10} {'ratio':>6}"
    )
    for r in report["rows"]:
        lines.append(
            f"  {r['size']:>10} {r['ring']['bandwidth_MBps']:>10.1f} "
            f"{r['ring_pickle']['bandwidth_MBps']:>10.1f} "
            f"{r['ringtest']['bandwidth_MBps']:>10.1f} {r['pingpong']['bandwidth_MBps']:>10.1f} "
            f"{r['bw_ratio_pingpong']:>6.2f} {r['pingpong_filled']['bandwidth_MBps']:>10.1f} "
            f"{r['bw_ratio_pingpong_filled']:>6.2f}"
        )
    return "\n".join(lines)
