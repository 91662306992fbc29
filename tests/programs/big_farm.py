"""One task whose result is larger than 2 GiB, through the farm; run alone.

``mpiexec -n 2 python tests/programs/big_farm.py bytes|array SCHEDULE [GIB]``:
the worker returns a ``bytes`` object (default 3 GiB) or a numpy int64 array
(default 2.5 GiB) of known content; the root checks it piece by piece,
printing ``ok: KIND NBYTES CRC32``. The root computes nothing (``cores=1``),
so the result crosses from the worker. Memory: about the result's size on
the worker and twice it on the root (``bytes`` are copied out of the receive
buffer; arrays are not).
"""

from __future__ import annotations

import resource
import sys
import time
import zlib

import numpy as np
from mpi4py import MPI

from ringmpi.farm import farm_map

#: The bytes repeat 0..250 (a prime period, so a shift shows), in blocks.
BLOCK = bytes(range(251)) * 4096
PIECE = 64 << 20


def make_bytes(nbytes: int) -> bytes:
    whole, rest = divmod(nbytes, len(BLOCK))
    return b"".join([BLOCK] * whole + [BLOCK[:rest]])  # one allocation


def expected_crc(nbytes: int) -> int:
    whole, rest = divmod(nbytes, len(BLOCK))
    crc = 0
    for _ in range(whole):
        crc = zlib.crc32(BLOCK, crc)
    return zlib.crc32(BLOCK[:rest], crc)


def task(spec: tuple[str, int]):
    kind, nbytes = spec
    if kind == "bytes":
        return make_bytes(nbytes)
    return np.arange(nbytes // 8, dtype=np.int64)


def check_array(result, nbytes: int) -> int:
    count = nbytes // 8
    assert type(result) is np.ndarray and result.dtype == np.int64, type(result)
    assert result.shape == (count,), result.shape
    crc = 0
    step = PIECE // 8
    for start in range(0, count, step):
        piece = result[start : start + step]
        if not np.array_equal(piece, np.arange(start, start + len(piece), dtype=np.int64)):
            raise SystemExit(f"error: the array differs in [{start}, {start + len(piece)})")
        crc = zlib.crc32(piece, crc)
    return crc


def check_bytes(result, nbytes: int) -> int:
    assert type(result) is bytes, type(result)
    assert len(result) == nbytes, len(result)
    view = memoryview(result)
    crc = 0
    for start in range(0, nbytes, PIECE):
        crc = zlib.crc32(view[start : start + PIECE], crc)
    if crc != expected_crc(nbytes):
        raise SystemExit("error: the bytes differ (CRC-32)")
    return crc


def main() -> None:
    kind, schedule = sys.argv[1], sys.argv[2]
    gib = float(sys.argv[3]) if len(sys.argv) > 3 else (3.0 if kind == "bytes" else 2.5)
    nbytes = int(gib * (1 << 30)) + 13  # not a round size
    nbytes -= nbytes % 8 if kind == "array" else 0
    comm = MPI.COMM_WORLD
    begin = time.perf_counter()
    results = farm_map(comm, task, [(kind, nbytes)], schedule=schedule, cores=1)
    elapsed = time.perf_counter() - begin
    peaks = comm.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10, root=0)
    if comm.Get_rank() == 0:
        print(f"farm: {elapsed:.1f} s; peak RSS by rank [MiB]: {peaks}", flush=True)
        assert results is not None
        result = results.pop()
        check = check_bytes if kind == "bytes" else check_array
        crc = check(result, nbytes)
        print(f"ok: {kind} {nbytes} {crc:08x}", flush=True)


if __name__ == "__main__":
    main()
