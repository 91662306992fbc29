"""ringmpi: parallel Python under MPI, from a laptop to a cluster."""

from __future__ import annotations

__version__ = "0.2.0"

from .executor import FarmExecutor, FarmPool

__all__ = ["FarmExecutor", "FarmPool"]
