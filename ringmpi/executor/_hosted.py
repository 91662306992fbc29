"""Executors and pools of a script run by ``python -m ringmpi.run``.

The script runs on rank 0 alone; the other ranks wait in :func:`serve` for
it to need them. Each ``FarmExecutor()`` or ``FarmPool()`` the script creates
(without a communicator) first calls :meth:`Hosted.begin` on the root, which
orders every worker into the farm; the farm then starts as it does when every
rank creates the executor. One executor or pool holds the workers at a time;
once it has released them, the next may begin.

Protocol, on a private duplicate of ``COMM_WORLD`` made when the run starts:
``R -> W`` ``Tag.ORDER``: the options the workers need (``fault_tolerant``),
or None when the script has ended; ``W -> R`` ``Tag.READY``: None, or why the
worker could not load the script's main module (so that functions defined in
it reach the workers by name, as with ``multiprocessing``'s spawn and
``mpi4py.futures``, the workers import it under the name ``__worker__``
and make it their ``__main__``: code under ``if __name__ == "__main__":``
runs on the root only).
"""

from __future__ import annotations

import enum
import functools
import os
import runpy
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..base import poll
from ..base.errors import RingmpiError
from ..farm.service import Service, check_options, set_hosted, start

#: The name the script's main module has on the workers.
WORKER_MAIN = "__worker__"

#: Seconds at most between a worker's looks for the script's next order.
NAP = 0.05


class Tag(enum.IntEnum):
    ORDER = 1
    READY = 2


class HostedError(RingmpiError):
    """A worker could not take part in the script's executor."""


@dataclass
class Main:
    """The script's main module, as the command line named it."""

    path: str | None
    module: str | None
    argv: list[str]

    def load(self) -> str | None:
        """Import it on a worker as ``__worker__`` and make it ``__main__``;
        return why it could not be, or None."""
        sys.argv = list(self.argv)
        _loading.append(True)
        try:
            if self.module is not None:
                names = runpy.run_module(self.module, run_name=WORKER_MAIN, alter_sys=True)
            else:
                assert self.path is not None
                sys.path[0] = os.path.dirname(os.path.realpath(self.path))
                names = runpy.run_path(self.path, run_name=WORKER_MAIN)
        except BaseException as exc:  # whatever the script's top level raised
            what = self.module or self.path
            return (
                f"rank {_world_rank()} could not import {what}: {type(exc).__name__}: {exc} "
                "(the workers import the script to find its functions: put what it runs "
                "under 'if __name__ == \"__main__\":')"
            )
        finally:
            _loading.pop()
        module = types.ModuleType(WORKER_MAIN)
        module.__dict__.update(names)
        sys.modules["__main__"] = sys.modules[WORKER_MAIN] = module
        return None


def _world_rank() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()


#: Set while a worker imports the script (an executor created then is a mistake).
_loading: list[bool] = []


class Hosted:
    """The root's side: orders the workers into each executor or pool of the script."""

    def __init__(self, session, root: int = 0):
        self.session = session
        self.root = root
        self.workers = [r for r in range(session.Get_size()) if r != root]
        #: the service that holds the workers now, and how to end it at the end
        self.service: Service | None = None
        self._end: Callable[[], None] | None = None

    def begin(self, options: dict[str, Any]) -> None:
        """Bring every worker into a new farm for ``options``; call :func:`start` next.

        Raises:
            ValueError: A bad option (the workers were not called).
        """
        check_options(options.get("task_timeout"), options.get("memory_limit"))
        previous = self.service
        if previous is not None:
            if not previous.shut:
                raise RuntimeError(
                    "under ringmpi.run one FarmExecutor or FarmPool holds the workers at a "
                    "time: shut the first down (or leave its 'with' block) before the next"
                )
            previous.join()
            self.service = self._end = None
        # Instances of the script's classes come back named by the workers'
        # name for it.
        sys.modules.setdefault(WORKER_MAIN, sys.modules["__main__"])
        order = {"fault_tolerant": bool(options.get("fault_tolerant"))}
        for request in [self.session.isend(order, r, Tag.ORDER) for r in self.workers]:
            poll.wait(request)
        problems = [poll.recv(self.session, r, Tag.READY) for r in self.workers]
        problem = next((p for p in problems if p is not None), None)
        if problem is not None:
            raise HostedError(problem)

    def started(self, service: Service, cancel: bool) -> None:
        """``service`` holds the workers now; if the script does not end it,
        the end of the script does: after its pending tasks, or (``cancel``,
        a pool) with them cancelled. Only the service is held, so an
        executor or pool the script drops can be collected."""
        self.service = service
        self._end = functools.partial(service.shutdown, True, cancel)

    def close(self) -> None:
        """The script has ended: end what it left open, then release the workers."""
        service, end = self.service, self._end
        if service is not None and end is not None:
            end()
            service.join()
        self.service = self._end = None
        for request in [self.session.isend(None, r, Tag.ORDER) for r in self.workers]:
            poll.wait(request)


#: The root's :class:`Hosted` while a script runs under ``ringmpi.run``.
_current: list[Hosted] = []


def current() -> Hosted | None:
    """The running script's :class:`Hosted` on the root, else None.

    Raises:
        RuntimeError: On a worker importing the script, whose top level
            creates an executor (it must be under ``if __name__ == "__main__":``).
    """
    if _loading:
        raise RuntimeError("the script creates a FarmExecutor or FarmPool at its top level")
    return _current[-1] if _current else None


def is_world(comm) -> bool:
    """Whether ``comm`` (None: the default) is ``COMM_WORLD``, which a hosted script shares."""
    if comm is None:
        return True
    from mpi4py import MPI

    return comm == MPI.COMM_WORLD


class hosting:
    """On the root, for the body: executors and pools created without a
    communicator order the workers in (see :class:`Hosted`)."""

    def __init__(self, session, root: int = 0):
        self.hosted = Hosted(session, root)

    def __enter__(self) -> Hosted:
        _current.append(self.hosted)
        set_hosted(True)
        return self.hosted

    def __exit__(self, *exc_info: Any) -> None:
        _current.remove(self.hosted)
        set_hosted(bool(_current))
        self.hosted.close()


def serve(session, main: Main, root: int = 0) -> None:
    """A worker's side: join each farm the script starts, until it ends."""
    from mpi4py import MPI

    from ..farm import FarmUsageError

    backoff = poll.Backoff(cap=NAP)
    problem: str | None = None
    loaded = False
    while True:
        order = poll.recv(session, root, Tag.ORDER, backoff=backoff)
        if order is None:
            return
        if not loaded:
            problem, loaded = main.load(), True
        session.send(problem, root, Tag.READY)
        if problem is not None:
            continue
        try:
            _, serve_farm = start(MPI.COMM_WORLD, root, **order)
        except FarmUsageError:
            continue  # the root raises it in the script
        assert serve_farm is not None
        serve_farm()


__all__: Sequence[str] = [
    "Hosted",
    "HostedError",
    "Main",
    "current",
    "hosting",
    "is_world",
    "serve",
]
