"""Run the pytest-mpi suite in ``tests/mpi`` under ``mpiexec -n 1, 2, 4``.

This is how plain ``python -m pytest`` runs the MPI tests too. By hand:
``mpiexec -n 4 python -m pytest --with-mpi tests/mpi -p no:cacheprovider``.
"""

from __future__ import annotations

import re

import pytest

#: Per inner test: pytest-timeout ends a hung rank (the thread method exits the
#: process, so mpiexec takes the whole job down); faulthandler prints the stack
#: of every rank, including those whose report is silenced, shortly before.
INNER_TIMEOUT = 120
INNER_ARGS = [
    "-m",
    "pytest",
    "--with-mpi",
    "tests/mpi",
    # Ranks would race each other over the cache directory.
    "-p",
    "no:cacheprovider",
    "--color=no",
    f"--timeout={INNER_TIMEOUT}",
    "--timeout-method=thread",
    "-o",
    f"faulthandler_timeout={INNER_TIMEOUT - 10}",
]


@pytest.mark.parametrize("n", [1, 2, 4])
def test_mpi_suite(mpirun, n):
    result = mpirun(n, *INNER_ARGS, timeout=INNER_TIMEOUT + 120)
    result.check(0)
    out = result.stdout
    # One report, from rank 0 of a world of n.
    assert out.count("test session starts") == 1, result.describe()
    assert re.search(rf"^size: {n}$", out, re.MULTILINE), result.describe()
    summary = re.search(r"^=* ?(\d+) passed.* in [\d.]+s", out, re.MULTILINE)
    assert summary, result.describe()
    assert int(summary.group(1)) > 0
    assert not re.search(r"\d+ (failed|error)", out), result.describe()
