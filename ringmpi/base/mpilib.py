"""Whether mpi4py can load an MPI library, asked before MPI starts."""

from __future__ import annotations

import importlib.util
import os

INSTALL_HINT = (
    "install one: pip install '.[mpi]' in a ringmpi checkout (Open MPI from PyPI), "
    "or your system's MPI with mpi4py built against it "
    "(pip install --no-binary mpi4py mpi4py)"
)


def missing_library() -> str | None:
    """Return why mpi4py cannot load an MPI library, or None if it can.

    mpi4py's binary wheels find and load the MPI library when ``mpi4py.MPI``
    is looked up, before it is imported (and before ``MPI_Init``), so looking
    it up asks the question without starting MPI. The answer is cached by
    mpi4py: the import that follows loads the same library.
    """
    try:
        importlib.util.find_spec("mpi4py.MPI")
    except RuntimeError as exc:
        if "MPI library" not in str(exc):
            raise
        forced = os.environ.get("MPI4PY_LIBMPI")
        where = f" (MPI4PY_LIBMPI={forced})" if forced else ""
        return f"mpi4py found no MPI library to load{where}; {INSTALL_HINT}"
    return None
