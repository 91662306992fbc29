"""Whether mpi4py can load an MPI library, asked before MPI starts."""

from __future__ import annotations

import importlib.util
import os
import re

from .errors import RingmpiError

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


def loaded_library() -> str | None:
    """The MPI library's file that mpi4py loaded (after :func:`missing_library`
    found one), read from ``/proc/self/maps``; None where that cannot be told."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if line.strip() else ""
                if os.path.basename(path).startswith("libmpi.so"):
                    return path
    except OSError:
        pass
    return None


def library_version() -> str:
    """Return ``MPI.Get_library_version()``: which MPI library runs (MPI started)."""
    from mpi4py import MPI

    return MPI.Get_library_version()


def fault_tolerance_hint(version: str | None = None) -> str:
    """Say what ringmpi's fault tolerance needs from the MPI that runs, or that it has none.

    ringmpi survives lost workers through ULFM as Open MPI 5 offers it
    (``mpiexec --with-ft ulfm``); other libraries are told apart by
    ``MPI.Get_library_version()``, so that nobody is sent to an option
    their ``mpiexec`` does not have.

    Args:
        version: The library's version text (default: asked of MPI).
    """
    text = library_version() if version is None else version
    first = " ".join(text.strip().splitlines()[0].split()) if text.strip() else "unknown"
    name = first.rstrip(",;: ")[:60]
    match = re.search(r"Open MPI v(\d+)", text)
    if match and int(match.group(1)) >= 5:
        return "launch with 'mpiexec --with-ft ulfm'"
    if match:
        return (
            f"this MPI ({name}) has no 'mpiexec --with-ft ulfm': fault tolerance "
            "needs Open MPI 5 or later"
        )
    return (
        f"ringmpi's fault tolerance needs Open MPI 5 with ULFM ('mpiexec --with-ft ulfm'); "
        f"this MPI ({name}) has none that ringmpi can use"
    )


class MPINotReady(RingmpiError):
    """MPI is not initialized (``mpi4py.rc.initialize = False``) or already finalized."""

    collective = True


def check_ready() -> None:
    """Raise ``MPINotReady`` unless MPI is initialized and not yet finalized.

    With ``mpi4py.rc.initialize = False`` the first MPI call would make Open
    MPI abort every rank with a box of its own; this says why in one line.

    Raises:
        MPINotReady: MPI cannot be used now.
    """
    from mpi4py import MPI

    if MPI.Is_finalized():
        raise MPINotReady("MPI has already been finalized: ringmpi needs it running")
    if not MPI.Is_initialized():
        raise MPINotReady(
            "MPI is not initialized (mpi4py.rc.initialize = False): call "
            "mpi4py.MPI.Init() (or Init_thread()) first, or leave mpi4py.rc.initialize "
            "at True"
        )
