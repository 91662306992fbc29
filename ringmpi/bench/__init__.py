"""``python -m ringmpi.bench``: ringmpi side by side with what users would pick instead.

The program is :mod:`._main` (``main``, the pictures) with its command line
in :mod:`._parser` and its targets in :mod:`._targets`; one module per
benchmark: :mod:`._fib` (the article's tasks, with :mod:`._local` for the
approaches in one process or its children and :mod:`._mpi` for those under
MPI), :mod:`._ring`, :mod:`._pool`, :mod:`._data` (with :mod:`._memory`).
Nothing else in ringmpi imports this package.
"""

from __future__ import annotations

from ._main import BenchError, main
from ._parser import PROG, build_parser

__all__ = ["PROG", "BenchError", "build_parser", "main"]
