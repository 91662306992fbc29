"""A clean stop on SIGTERM, SIGINT or SIGUSR1 while a farm runs.

The handler only notes the signal; the root's engine then stops handing out
work, takes back what the workers have not started, and waits up to
``grace`` seconds for the tasks running; the workers leave when the root
says so. A worker that
gets the signal alone (``kill`` of one rank, the kernel's OOM handling a
SIGTERM) tells the root at once (``Tag.STOP``), and the whole farm stops the
same way. If a rank is
still alive ``grace + 3`` seconds after the signal (a task longer than the
grace, the static schedule), a timer ends it with ``128 + signal``.

How signals arrive (measured with Open MPI 5.0.11): ``mpiexec`` (prterun)
turns SIGTERM and SIGINT into SIGTERM for every rank, SIGKILLs them about
0.25 s later, drops what they print after the signal and exits 1; it
forwards SIGUSR1 and SIGUSR2 unchanged. Slurm's ``scancel`` and time limit
send SIGTERM to every process of the job (the ranks included) and SIGKILL
after ``KillWait``. So under ``mpiexec`` only the journal, written as each
result arrives, survives a SIGTERM; the grace period and the message need
the signal to reach the ranks themselves (``srun``, ``kill`` of the ranks,
or SIGUSR1 to ``mpiexec``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from ..base.errors import RingmpiError, print_error

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
#: Seconds after the grace period before a rank that has not ended is ended.
MARGIN = 3.0


class FarmStopped(RingmpiError):
    """The farm stopped early on a signal; exit status ``128 + signal``.

    Attributes:
        signum: The signal.
        done: Tasks with a result (in the journal, when there is one).
        total: Tasks in the run.
        journal: The journal's path, or None.
    """

    def __init__(self, signum: int, done: int, total: int, journal: str | None, collective: bool):
        self.signum, self.done, self.total, self.journal = signum, done, total, journal
        self.exit_code = 128 + signum
        self.collective = collective
        super().__init__(self.describe())

    def describe(self, resume: str = "--resume", keep: str = "--journal PATH") -> str:
        name = signal.Signals(self.signum).name
        if self.journal is not None:
            return (
                f"stopped by {name}: {self.done} of {self.total} results are in "
                f"{self.journal}; rerun with {resume}"
            )
        return (
            f"stopped by {name} with {self.done} of {self.total} results done, and no "
            f"journal to keep them; run with {keep} to keep them next time"
        )


class Stop:
    """Notes the first stop signal; see the module docstring.

    Args:
        grace: Seconds the root waits for the tasks running.
    """

    def __init__(self, grace: float):
        self.grace = grace
        self.signum: int | None = None
        self.since = 0.0
        self._timer: threading.Timer | None = None
        #: Called with the signal number when one arrives (a worker tells
        #: the root with it).
        self.on_signal: Callable[[int], None] | None = None

    def _handle(self, signum: int, _frame: object) -> None:
        if self.notice(signum) and self.on_signal is not None:
            self.on_signal(signum)

    def notice(self, signum: int) -> bool:
        """Stop on ``signum`` as if it had arrived here; False if already stopping."""
        if self.signum is not None:
            return False
        self.signum, self.since = signum, time.monotonic()
        self._timer = threading.Timer(self.grace + MARGIN, self._end)
        self._timer.daemon = True
        self._timer.start()
        return True

    def _end(self) -> None:
        assert self.signum is not None
        name = signal.Signals(self.signum).name
        print_error(
            f"stopped by {name}: still running {self.grace + MARGIN:g} s later; "
            "results that arrived are in the journal, if any"
        )
        os._exit(128 + self.signum)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def expired(self) -> bool:
        return self.signum is not None and time.monotonic() - self.since > self.grace

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stop]:
        """Handle the signals inside the block (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        before = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        try:
            yield self
        finally:
            # Out of the farm, the program ends on its own (or raises).
            if self._timer is not None:
                self._timer.cancel()
            for sig, handler in before.items():
                signal.signal(sig, handler)


def agree(comm, signum: int, ft: bool) -> int:
    """Return the largest ``signum`` of all ranks; collective, never spins."""
    import numpy as np
    from mpi4py import MPI

    from ..base import poll

    mine = np.array([signum], dtype=np.int64)
    decided: np.ndarray = np.zeros(1, dtype=np.int64)
    try:
        poll.wait(comm.Iallreduce(mine, decided, op=MPI.MAX))
    except MPI.Exception:
        if not ft:
            raise
        return signum  # a rank was lost: each survivor goes by what it knows
    return int(decided[0])


def read_notes(comm, tag: int) -> None:
    """On the root, read the stop notes (``tag``) still unread: one worker's
    note stops the farm, but every worker that got the signal sent one, and
    none may be left on a communicator that is freed (MPICH gives its context
    to the next one, whose farm would read it and stop)."""
    from mpi4py import MPI

    with contextlib.suppress(MPI.Exception):  # a lost rank (ULFM): nothing to read
        message = comm.improbe(MPI.ANY_SOURCE, tag)
        while message is not None:
            message.recv()
            message = comm.improbe(MPI.ANY_SOURCE, tag)


def abort_job(why: str) -> None:
    """End the whole job with one ``error:`` line: workers that cannot be
    released (a task ran past its time, a rank was lost) would keep it alive."""
    from mpi4py import MPI

    print_error(why)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    MPI.COMM_WORLD.Abort(1)


_abort_registered: list[str] = []
STUCK = "the farm's workers cannot be released ({}): ending the job"


def abort_job_at_exit(why: str) -> None:
    """The root raised after its workers were stuck and the program may go
    on (it caught the error): end the job when the program ends."""
    if not _abort_registered:
        atexit.register(lambda: abort_job(STUCK.format(_abort_registered[0])))
    _abort_registered[:] = [why]
