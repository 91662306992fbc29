"""The base every other part of ringmpi stands on; it imports nothing else of ringmpi.

:mod:`.errors` (what the library raises, exit codes, the one error line),
:mod:`.config` (every ``RINGMPI_*`` variable, read in one place),
:mod:`.poll` (waiting for messages without spinning), :mod:`.limits` (what MPI
and the machine allow: the largest count, buffers past it, usable CPUs) and
:mod:`.mpilib` (whether mpi4py can load an MPI library, asked before MPI
starts).
"""

from __future__ import annotations

from . import config, errors, limits, mpilib, poll

__all__ = ["config", "errors", "limits", "mpilib", "poll"]
