"""Sizes of memory (``512M``, ``2G``), and a limit on what a process allocates.

The limit is ``RLIMIT_DATA``: on Linux (4.7 and later) it counts the process's
private writable memory, its heap and every private anonymous ``mmap``
(``VmData`` in ``/proc/self/status``), which is where Python objects and numpy
arrays live. Shared memory (MPI's shared-memory transport, the farm's shared
windows) and files mapped read-only are not counted. An allocation past the
limit fails, and Python raises ``MemoryError``.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator

from .errors import quoted

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Return the bytes of ``value``: bytes, or a size such as ``"512M"``, ``"2G"``, ``"1.5GiB"``.

    Units are powers of 1024 (``K``, ``M``, ``G``, ``T``, with or without
    ``B``/``iB``).

    Raises:
        ValueError: Not a size, or not positive.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and len(value) <= 40 and (match := _SIZE.fullmatch(value)):
        size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    else:
        what = quoted(value) if isinstance(value, str) else repr(value)
        raise ValueError(f"not a size: {what} (give bytes, or a number with K, M, G or T)")
    if size <= 0:
        raise ValueError(f"a size must be positive, not {value!r}")
    return size


def format_size(size: int) -> str:
    """Return ``size`` bytes the short way: ``1 GiB``, ``512 MiB``, ``1.5 GiB``."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.4g} {unit}"
    return f"{size} B"


def why_unlimitable() -> str | None:
    """Return why this platform cannot limit a process's memory, or None."""
    if not sys.platform.startswith("linux"):
        return f"a memory limit needs Linux, where RLIMIT_DATA counts mmap (this is {sys.platform})"
    return None


def held() -> int | None:
    """Return the private writable memory this process holds (``VmData``), or None if unknown."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@contextlib.contextmanager
def limited(limit: int) -> Iterator[None]:
    """Cap this process's private writable memory at ``limit`` bytes for the body.

    The soft ``RLIMIT_DATA`` is lowered (never above the hard limit) and put
    back after, so the cap holds while the body runs, on every thread of the
    process.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
