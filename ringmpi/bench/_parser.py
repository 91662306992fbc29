"""The command line of ``python -m ringmpi.bench``: one subcommand per benchmark."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import __version__
from ..base.errors import quoted
from ..harness import ArgumentParser, arg_type, int_arg
from ..ring import parse_size, parse_sweep
from . import _data as bench_data
from . import _engine as bench_engine
from . import _fib as bench_fib
from . import _pool as bench_pool

PROG = "python -m ringmpi.bench"


def _choices(allowed: Sequence[str]):
    def parse(text: str) -> list[str]:
        names = [w.strip() for w in text.split(",") if w.strip()]
        wrong = [n for n in names if n not in allowed]
        if wrong or not names:
            raise argparse.ArgumentTypeError(
                f"invalid choice {quoted(text)} (choose from {', '.join(allowed)})"
            )
        return names

    return parse


@arg_type
def _sizes_arg(text: str) -> list[int]:
    if ":" in text:
        return parse_sweep(text)
    return [parse_size(w) for w in text.split(",")]


def _add_list(
    parser: ArgumentParser, flags: Sequence[str], what: str, allowed: Sequence[str]
) -> None:
    """Add a repeatable option that takes a comma-separated list of ``allowed`` names."""
    parser.add_argument(
        *flags,
        type=_choices(allowed),
        action="extend",
        help=f"comma-separated {what} (default all: {', '.join(allowed)})",
    )


def _add_processes(parser: ArgumentParser, help: str) -> None:
    parser.add_argument("-P", "--processes", type=int_arg(1), default=None, help=help)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="benchmarks side by side: every way to run the article's Fibonacci "
        "tasks in parallel (fib), ringmpi's ring beside mpi4py.bench (ring), and the "
        "executor and pool beside mpi4py.futures, multiprocessing and schwimmbad (pool), "
        "and large and shared data beside multiprocessing and mpi4py.futures (data), "
        "and the root's engine at scale and in the cases it exists for (engine)",
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{fib,ring,pool,data,engine}")
    sub.required = True
    common = ArgumentParser(add_help=False)
    common.add_argument(
        "--repeat",
        type=int_arg(1),
        default=None,
        help="timed runs of each (default 5 for ring, 3 for the others)",
    )
    common.add_argument(
        "--quick",
        action="store_true",
        help="tiny inputs, one run each: checks results, reports no targets (for tests)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON document")
    common.add_argument("--plot", metavar="FILE.png", help="also draw a plot (needs matplotlib)")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress on stderr")
    common.add_argument("-q", "--quiet", action="store_true", help="print only the tables")

    for add in (_add_fib, _add_ring, _add_pool, _add_data, _add_engine):
        add(sub, common)
    return parser


def _add_fib(sub, common: ArgumentParser) -> None:
    fib = sub.add_parser(
        "fib",
        parents=[common],
        help="the Fibonacci workloads under every approach",
        description="time the same Fibonacci tasks under every approach; run under "
        "mpiexec with cores+1 ranks (the MPI approaches use the ranks, the others "
        "run on rank 0 while the other ranks sleep)",
    )
    _add_list(fib, ("-w", "--workload"), "workloads", bench_fib.WORKLOAD_NAMES)
    _add_list(fib, ("-a", "--approach"), "approaches", bench_fib.APPROACHES)
    _add_processes(fib, "processes/threads for pool, ppe, children, c-threads (default: cores)")


def _add_ring(sub, common: ArgumentParser) -> None:
    ring = sub.add_parser(
        "ring",
        parents=[common],
        help="ringmpi's ring beside mpi4py.bench ringtest and pingpong",
        description="time ringmpi's ring (buffers, pickled) beside mpi4py.bench ringtest "
        "and pingpong at the same sizes, in the same job",
    )
    ring.add_argument(
        "-s",
        "--sizes",
        type=_sizes_arg,
        default=None,
        help="sizes as MIN:MAX (powers of two) or a comma list (default 1, 4, 16, ... 4M)",
    )


def _add_pool(sub, common: ArgumentParser) -> None:
    pool = sub.add_parser(
        "pool",
        parents=[common],
        help="FarmExecutor and FarmPool beside mpi4py.futures, multiprocessing, schwimmbad",
        description="time submit, tiny-task map and an emcee run under FarmExecutor/FarmPool "
        "and their peers, in the same job; run under mpiexec with cores+1 ranks",
    )
    _add_list(pool, ("-w", "--workload"), "workloads", bench_pool.WORKLOADS)
    _add_processes(pool, "processes for multiprocessing.Pool (default: cores)")


def _add_data(sub, common: ArgumentParser) -> None:
    data = sub.add_parser(
        "data",
        parents=[common],
        help="shared read-only data and large results through the farm",
        description="memory of one array shared by the farm beside multiprocessing.Pool "
        "and mpi4py.futures with initargs; bandwidth of large results beside "
        "mpi4py.bench pingpong; tasks that read a large shared table (run under "
        "mpiexec -n 8 --oversubscribe for the memory target)",
    )
    _add_list(data, ("-p", "--part"), "parts", bench_data.PARTS)
    data.add_argument(
        "--size",
        type=int_arg(1),
        default=None,
        metavar="MIB",
        help="MiB of the shared array in the memory part (default 1024; quick 16)",
    )


def _add_engine(sub, common: ArgumentParser) -> None:
    engine = sub.add_parser(
        "engine",
        parents=[common],
        help="the root's engine at scale, head-of-line, cancel, lone round trips, memory",
        description="efficiency of farm_map, FarmExecutor.map and mpi4py.futures on tasks "
        "that sleep 10 ms at this job's size (run at 17, 33, 65, 129 ranks: "
        "scripts/bench-engine), and the cases the engine exists for",
    )
    _add_list(engine, ("-w", "--workload"), "workloads", bench_engine.WORKLOADS)
    _add_processes(engine, "processes for ProcessPoolExecutor and multiprocessing (default: cores)")
