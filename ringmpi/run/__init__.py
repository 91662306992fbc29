"""``python -m ringmpi.run script.py [args]``: a plain ``concurrent.futures`` script over MPI.

The script runs as ``__main__`` on rank 0 alone, with ``sys.argv`` as given;
every ``FarmExecutor()`` and ``FarmPool()`` it creates uses the other ranks,
which serve until the script ends (see :mod:`ringmpi.executor`). The
program is :mod:`._run`.
"""

from __future__ import annotations

from ._run import PROG, build_parser, cli, main, parse

__all__ = ["PROG", "build_parser", "cli", "main", "parse"]
