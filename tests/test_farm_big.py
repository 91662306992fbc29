"""Results past 2 GiB through the farm, end to end; opt-in, one at a time.

Each case needs about 10 GiB of memory (the result on the worker, twice it
on the root for ``bytes``), so they run only with ``RINGMPI_TEST_BIG=1`` and
enough memory available: ``RINGMPI_TEST_BIG=1 python -m pytest
tests/test_farm_big.py``. Run them alone, not beside other heavy jobs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

PROGRAM = str(Path(__file__).parent / "programs" / "big_farm.py")
#: GiB of available memory a case needs.
NEEDS_GIB = 11


def _available_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / (1 << 20)
    return 0.0


@pytest.mark.skipif(
    os.environ.get("RINGMPI_TEST_BIG") != "1", reason="set RINGMPI_TEST_BIG=1 (about 10 GiB)"
)
@pytest.mark.parametrize(
    ("kind", "schedule", "nbytes"),
    [("bytes", "dynamic", 3 * (1 << 30) + 13), ("array", "static", int(2.5 * (1 << 30)) + 8)],
)
def test_result_past_2_gib_comes_back_exactly(mpirun, kind, schedule, nbytes):
    if _available_gib() < NEEDS_GIB:
        pytest.skip(f"needs {NEEDS_GIB} GiB of available memory, {_available_gib():.1f} here")
    result = mpirun(2, PROGRAM, kind, schedule, timeout=600)
    result.check(0)
    match = re.search(rf"^ok: {kind} (\d+) ([0-9a-f]{{8}})$", result.stdout, re.MULTILINE)
    assert match, result.describe()
    assert int(match.group(1)) == nbytes, result.describe()
