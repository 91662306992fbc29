"""What MPI and the machine allow: the largest count of one call, buffers past it, usable CPUs."""

from __future__ import annotations

import os
from typing import Any

#: The largest count an MPI call takes (a C int).
MAX_COUNT = (1 << 31) - 1


def buffer_spec(buf: Any) -> tuple[list, Any]:
    """Return an mpi4py buffer spec for ``buf``, and a datatype to free after.

    Up to ``MAX_COUNT`` bytes: ``[buf, MPI.BYTE]``. Beyond, one derived
    datatype: a contiguous run of 1 MiB blocks, plus the remaining bytes.
    """
    from mpi4py import MPI

    nbytes = buf.nbytes
    if nbytes <= MAX_COUNT:
        return [buf, MPI.BYTE], None
    block = 1 << 20
    count, rest = divmod(nbytes, block)
    blocks = MPI.BYTE.Create_contiguous(block)
    body = blocks.Create_contiguous(count)
    blocks.Free()
    if rest:
        dtype = MPI.Datatype.Create_struct([1, rest], [0, count * block], [body, MPI.BYTE])
        body.Free()
    else:
        dtype = body
    dtype.Commit()
    return [buf, 1, dtype], dtype


def usable_cpus() -> set[int]:
    """Return the CPUs this process may run on (all of them where unknown)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))
