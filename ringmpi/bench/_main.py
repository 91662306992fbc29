"""Benchmarks side by side: ``python -m ringmpi.bench fib``, ``ring``, ``pool`` and ``data``."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from typing import Any

from ..base import poll
from ..base.errors import write_stderr
from ..farm.timeline import PLOT_HINT
from ..harness import RingmpiError, UsageError, print_result
from . import _data as bench_data
from . import _engine as bench_engine
from . import _fib as bench_fib
from . import _pool as bench_pool
from . import _ring as bench_ring
from ._parser import build_parser
from ._targets import fib_targets, format_targets, ring_targets


class BenchError(RingmpiError):
    """A benchmark produced wrong results."""

    collective = True


# --- plots ----------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise BenchError(f"--plot needs matplotlib: {PLOT_HINT}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fib(report: dict[str, Any], path: str) -> None:
    """Draw the speed-up of each approach, one panel per workload, into ``path``."""
    plt = _pyplot()
    works = report["workloads"]
    fig, axes = plt.subplots(1, len(works), figsize=(4.5 * len(works), 4.5), squeeze=False)
    for ax, (name, work) in zip(axes[0], works.items()):
        # The C kernel in one thread is 50-70x Python: it would flatten every
        # other bar, so c-threads is drawn over it instead.
        rows = [
            r
            for r in work["rows"]
            if "skipped" not in r and r["approach"] not in ("sequential", "c-sequential")
        ]
        labels = [r["approach"] + ("*" if r["baseline"] != "sequential" else "") for r in rows]
        if name == "empty":
            ax.barh(labels, [r["per_task_us"] for r in rows], color="tab:orange")
            ax.set_xscale("log")
            ax.set_xlabel("time per empty task [us], log scale")
        else:
            ax.barh(labels, [r["speedup"] or 0.0 for r in rows], color="tab:blue")
            ax.axvline(report["processes"], color="gray", linestyle="--", linewidth=1)
            ax.set_xlabel("speed-up over sequential (min/min)")
        ax.invert_yaxis()
        ax.set_title(f"{name}: {work['n']}", fontsize=9)
    fig.suptitle(
        f"ringmpi.bench fib, {report['ranks']} ranks, P = {report['processes']} "
        "(* over the C kernel in one thread)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ring(report: dict[str, Any], path: str) -> None:
    """Draw latency and bandwidth against message size into ``path``."""
    plt = _pyplot()
    rows = report["rows"]
    sizes = [r["size"] for r in rows]
    labels = {
        "ring": "ringmpi ring, buffers (per hop)",
        "ring_pickle": "ringmpi ring, pickled (per hop)",
        "ringtest": "mpi4py.bench ringtest (per hop)",
        "pingpong": "mpi4py.bench pingpong (one way)",
        "pingpong_filled": "pingpong, written buffers",
    }
    fig, (lat, bw) = plt.subplots(1, 2, figsize=(11, 4.5))
    for key, label in labels.items():
        lat.loglog(sizes, [r[key]["us_min"] for r in rows], marker="o", label=label)
        bw.loglog(sizes, [r[key]["bandwidth_MBps"] for r in rows], marker="o", label=label)
    lat.set_xlabel("message size [B]")
    lat.set_ylabel("time [us]")
    bw.set_xlabel("message size [B]")
    bw.set_ylabel("bandwidth [MB/s]")
    lat.legend(fontsize=8)
    fig.suptitle(f"ringmpi.bench ring, {report['ranks']} ranks", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- running a benchmark --------------------------------------------------------


def _wrong_results(comm, report: dict[str, Any] | None) -> None:
    """Raise on every rank if rank 0's report has a wrong result."""
    wrong = []
    if comm.Get_rank() == 0:
        assert report is not None
        wrong = [
            f"{name}/{row['approach']}"
            for name, work in report["workloads"].items()
            for row in work["rows"]
            if row.get("correct") is False
        ]
    wrong = comm.bcast(wrong, root=0)
    if wrong:
        raise BenchError(f"wrong results from: {', '.join(wrong)}")


def _need_ranks(comm, what: str, ranks: int) -> None:
    if comm.Get_size() < 2:
        raise UsageError(f"{what} need at least 2 ranks: run under mpiexec -n {ranks}")


def _run_fib(comm, args, repeat: int, log) -> tuple[dict[str, Any] | None, Any]:
    _need_ranks(comm, "the MPI approaches", 3)
    workloads = list(dict.fromkeys(args.workload or bench_fib.WORKLOAD_NAMES))
    chosen = set(args.approach or bench_fib.APPROACHES)
    approaches = [a for a in bench_fib.APPROACHES if a in chosen]
    report = bench_fib.run_benchmark(
        comm, workloads, approaches, repeat, args.quick, args.processes, log
    )
    _wrong_results(comm, report)
    if report is not None:
        # Tiny inputs time nothing worth comparing: quick mode checks results only.
        report["targets"] = [] if args.quick else fib_targets(report)
        report["text"] = bench_fib.format_report(report, args.quiet)
    return report, plot_fib


def _run_pool(comm, args, repeat: int, log) -> tuple[dict[str, Any] | None, Any]:
    _need_ranks(comm, "the MPI approaches", 3)
    names = list(dict.fromkeys(args.workload or bench_pool.WORKLOADS))
    report = bench_pool.run_benchmark(comm, names, repeat, args.quick, args.processes, log)
    _wrong_results(comm, report)
    if report is not None:
        report["targets"] = [] if args.quick else bench_pool.targets(report)
        report["text"] = bench_pool.format_report(report, args.quiet)
    return report, None


def _run_data(comm, args, repeat: int, log) -> tuple[dict[str, Any] | None, Any]:
    _need_ranks(comm, "the data benchmark's parts", 8)
    parts = list(dict.fromkeys(args.part or bench_data.PARTS))
    size = args.size or (16 if args.quick else 1024)
    report = bench_data.run_benchmark(comm, parts, size, repeat, args.quick, log)
    poll.barrier(comm)
    if report is not None:
        report["targets"] = [] if args.quick else bench_data.data_targets(report)
        report["text"] = bench_data.format_report(report, args.quiet)
    return report, None


def _run_ring(comm, args, repeat: int, log) -> tuple[dict[str, Any] | None, Any]:
    sizes = args.sizes or (bench_ring.QUICK_SIZES if args.quick else bench_ring.DEFAULT_SIZES)
    report = bench_ring.run_benchmark(comm, sizes, repeat, args.quick, log)
    poll.barrier(comm)
    if report is not None:
        report["targets"] = [] if args.quick else ring_targets(report)
        report["text"] = bench_ring.format_report(report, args.quiet)
    return report, plot_ring


def _run_engine(comm, args, repeat: int, log) -> tuple[dict[str, Any] | None, Any]:
    _need_ranks(comm, "the engine benchmark", 3)
    names = list(dict.fromkeys(args.workload or bench_engine.WORKLOADS))
    report = bench_engine.run_benchmark(comm, names, repeat, args.quick, args.processes, log)
    if report is not None:
        report["targets"] = [] if args.quick else bench_engine.targets(report)
        report["text"] = bench_engine.format_report(report, args.quiet)
    return report, None


RUNNERS = {
    "fib": _run_fib,
    "ring": _run_ring,
    "pool": _run_pool,
    "data": _run_data,
    "engine": _run_engine,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a benchmark; see ``python -m ringmpi.bench --help``."""
    from mpi4py import MPI

    args = build_parser().parse_args(argv)
    comm = MPI.COMM_WORLD
    repeat = args.repeat or (1 if args.quick else 5 if args.command == "ring" else 3)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise BenchError(f"--plot needs matplotlib: {PLOT_HINT}")

    def log(line: str) -> None:
        if args.verbose:
            write_stderr(f"[bench] {line}")

    report, plot = RUNNERS[args.command](comm, args, repeat, log)
    if comm.Get_rank() != 0:
        return 0
    assert report is not None
    text = report.pop("text")
    report["program"] = "bench"
    report["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
    if args.plot:
        if plot is None:
            raise BenchError("--plot draws only fib and ring")
        plot(report, args.plot)
    if args.json:
        print_result(json.dumps(report, indent=2))
    else:
        targets = format_targets(report["targets"])
        print_result(text + ("\n" + targets if targets and not args.quiet else ""))
    return 0
