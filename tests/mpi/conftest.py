"""Fixtures for the tests run on every rank under ``mpiexec -n N python -m pytest --with-mpi``.

Every rank runs every test. A check that fails on one rank must fail on all
of them, or the others would go on to the next test's collectives and hang:
wrap checks in ``with collectively:``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
from mpi4py import MPI


def pytest_configure(config: pytest.Config) -> None:
    """Give each rank its own temporary directory: all ranks run pytest at
    once, and would race over the numbered ones pytest makes and prunes."""
    if config.option.basetemp is None:
        rank = MPI.COMM_WORLD.Get_rank()
        base = Path(tempfile.gettempdir()) / f"ringmpi-mpi-tests-{os.getpid()}-rank{rank}"
        config.option.basetemp = str(base)
        config.stash[_OWN_BASETEMP] = base


def pytest_unconfigure(config: pytest.Config) -> None:
    base = config.stash.get(_OWN_BASETEMP, None)
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


_OWN_BASETEMP = pytest.StashKey[Path]()


class Collectively:
    """Context manager: the block's exceptions, gathered, fail every rank together.

    On leaving the block every rank of ``comm`` sends the error it raised (or
    None) to all; if any rank raised, every rank fails with all the messages.
    ``pytest.skip`` and the like are not caught.
    """

    def __init__(self, comm: MPI.Comm) -> None:
        self.comm = comm

    def __enter__(self) -> Collectively:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is not None and not isinstance(exc, Exception):
            return False  # KeyboardInterrupt, pytest's outcomes: let them through
        mine = None
        if exc is not None:
            mine = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
        errors = self.comm.allgather(mine)
        failed = [f"rank {rank}: {error}" for rank, error in enumerate(errors) if error]
        if failed:
            pytest.fail("\n".join(failed), pytrace=exc is not None)
        return False


@pytest.fixture
def world() -> MPI.Intracomm:
    return MPI.COMM_WORLD


@pytest.fixture
def collectively(world: MPI.Intracomm) -> Collectively:
    """``with collectively: assert ...`` fails on every rank if it fails on one."""
    return Collectively(world)


def _halves(world: MPI.Intracomm) -> MPI.Intracomm:
    # Even and odd world ranks, each half in reverse order.
    return world.Split(color=world.Get_rank() % 2, key=-world.Get_rank())


def _reversed(world: MPI.Intracomm) -> MPI.Intracomm:
    return world.Split(color=0, key=world.Get_size() - world.Get_rank())


_COMMS = {
    "world": lambda world: world,
    "self": lambda world: MPI.COMM_SELF,
    "halves": _halves,
    "reversed": _reversed,
}


@pytest.fixture(params=list(_COMMS))
def comm(request: pytest.FixtureRequest, world: MPI.Intracomm) -> Iterator[MPI.Intracomm]:
    """The code under test runs on each: the world, COMM_SELF, and split sub-communicators."""
    comm = _COMMS[request.param](world)
    yield comm
    if comm not in (MPI.COMM_WORLD, MPI.COMM_SELF):
        comm.Free()
