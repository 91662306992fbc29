"""Fixtures for the whole suite, and the split between the plain and the MPI runs.

``python -m pytest`` runs everything outside ``tests/mpi``; ``test_mpi_suites.py``
runs ``tests/mpi`` under ``mpiexec -n N python -m pytest --with-mpi``. Under
``--with-mpi`` only ``tests/mpi`` is collected, so that no rank starts
``mpiexec`` itself, and only rank 0 writes the report.
"""

from __future__ import annotations

import os
from pathlib import Path

import mpirun as _mpirun
import pytest

MPI_TESTS = Path(__file__).resolve().parent / "mpi"


def _with_mpi(config: pytest.Config) -> bool:
    return bool(
        config.getoption("--with-mpi", default=False)
        or config.getoption("--only-mpi", default=False)
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    inside = collection_path == MPI_TESTS or MPI_TESTS in collection_path.parents
    if _with_mpi(config):
        # Only what lies on the way to tests/mpi, or in it.
        return None if inside or collection_path in MPI_TESTS.parents else True
    return True if inside else None


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if not _with_mpi(config):
        return
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() != 0:
        # Every rank runs the same tests and, asserting collectively, reaches
        # the same verdict: one report, from rank 0, is enough.
        plugins = config.pluginmanager
        reporter = plugins.get_plugin("terminalreporter")
        if reporter is not None:
            plugins.unregister(reporter)
            devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as pytest
            config.add_cleanup(devnull.close)
            plugins.register(pytest.TerminalReporter(config, devnull), "terminalreporter")


@pytest.fixture
def mpirun():
    """Run ``mpiexec -n N python ARGS`` under a timeout; return a ``mpirun.Result``.

    ``mpirun(4, "-m", "ringmpi.ring", "--json", timeout=30, env={...})``.
    A run past its timeout has its whole session killed and fails the test
    with the partial output, unless ``fail_on_timeout=False``.
    """
    return _mpirun.run_mpiexec


@pytest.fixture
def pyrun():
    """Run ``python ARGS`` (no launcher) under a timeout; return a ``mpirun.Result``.

    ``pyrun("-m", "ringmpi.ring", env={"PMI_SIZE": "2"}, timeout=20)``.
    """
    return _mpirun.run_python


# --- the fast tier: python -m pytest -m "not slow" -----------------------------------
#
# The tests that take longest are marked ``slow`` here, in one place, from
# measured durations (``--durations``); the rest still touch every module of
# ringmpi. A file named with None is slow as a whole; otherwise the names of
# its slow tests (without parameters), or of the parameters kept fast.
SLOW_FILES: dict[str, set[str] | None] = {
    "test_docs.py": {"test_examples_run_as_written"},
    "test_farm_big.py": None,
    "test_journal_e2e.py": None,
    "test_engine_e2e.py": None,
    "test_pool_e2e.py": None,
    "test_harness_e2e.py": None,
    "test_fibfarm_e2e.py": None,
    "test_ring_e2e.py": None,
    "cluster/test_cluster.py": None,
    "cluster/test_slurm.py": None,
    # One quick run of each benchmark stays fast (fib's wording, the pool's
    # table, the ring's table at 2 ranks, data, engine); their twins are slow.
    "test_bench.py": {
        "test_fib_quick_json",
        "test_fib_quick_table_filtered",
        "test_pool_quick_json",
        "test_ring_quick_json",
        "test_plot",
    },
    # The catalogue's other cases: one of each kind stays fast (below).
    "test_failures.py": {
        "test_workers_do_not_spin_while_the_root_starts_late",
        "test_a_half_read_imap_does_not_hold_the_next_farm",
        "test_a_closed_pipe_after_status_ends_quietly",
        "test_other_writes_that_fail_are_one_error_line",
        "test_launcher_mismatch",
    },
    "test_packaging.py": {
        "test_sdist_holds_what_the_tests_need",
        "test_wheel_holds_the_package_and_its_metadata",
    },
}
#: Single parameters of tests that are otherwise fast.
SLOW_CASES = {
    ("test_failures.py", "test_closing_imap_early_releases_every_rank", "close-early-grace"),
    (
        "test_failures.py",
        "test_a_ring_message_larger_than_memory_is_refused_at_once",
        "99999999999G",
    ),
    ("test_failures.py", "test_results_that_cannot_be_written_are_an_error", "2"),
}
#: The MPI suites in the fast tier, by world size.
FAST_MPI_SIZES = {"1", "2"}
#: The failure catalogue's cases in the fast tier: one of each kind.
FAST_FAILURES = {
    "ring-unknown-flag",
    "fib-n-0",
    "task-raises",
    "worker-sigkill",
    "pool-map-task-raises",
    "uncaught-exception-one-rank",
    "fibfarm-one-rank",
    "misuse-root=7-n3",
    "misuse-lambda-n1",
}


def _is_slow(item: pytest.Item) -> bool:
    path = Path(str(item.fspath)).resolve()
    name = str(path.relative_to(Path(__file__).resolve().parent))
    base = getattr(item, "originalname", item.name)
    param = item.name[len(base) + 1 : -1] if item.name != base else ""
    if name == "test_mpi_suites.py":
        return param not in FAST_MPI_SIZES
    if name == "test_failures.py" and base == "test_failure":
        return param not in FAST_FAILURES
    if (name, base, param) in SLOW_CASES:
        return True
    if name not in SLOW_FILES:
        return False
    names = SLOW_FILES[name]
    return names is None or base in names


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
