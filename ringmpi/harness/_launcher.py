"""What a process learns from its launcher before MPI starts, and what it does then.

A launcher of one MPI library with mpi4py built for another starts N
processes that each see a world of one; a rank lost while the others are in
``MPI_Init`` can leave them waiting for ever. Both are caught here, before
or while MPI starts, when no MPI call can report them.
"""

from __future__ import annotations

import faulthandler
import os
import select
import socket
import time
from collections.abc import Mapping
from typing import Callable

from ..base import config
from ..base.errors import LauncherMismatch, print_error

# Environment variables through which launchers tell a process the size of
# its job. If MPI says the world has one rank but one of these says more,
# the launcher and the MPI library that mpi4py loaded do not belong together.
LAUNCHER_SIZE_VARS = (
    "OMPI_COMM_WORLD_SIZE",  # Open MPI
    "PMI_SIZE",  # MPICH / Hydra, Intel MPI, Slurm PMI-1/2
    "MV2_COMM_WORLD_SIZE",  # MVAPICH
    "SLURM_STEP_NUM_TASKS",  # srun
)
LAUNCHER_RANK_VARS = (
    "OMPI_COMM_WORLD_RANK",
    "PMI_RANK",
    "MV2_COMM_WORLD_RANK",
    "SLURM_PROCID",
)


def check_launcher(world_size: int, environ: dict[str, str] | None = None) -> None:
    """Raise ``LauncherMismatch`` if the launcher started more ranks than MPI sees.

    Args:
        world_size: The size of ``MPI.COMM_WORLD``.
        environ: The environment to read (default ``os.environ``).

    Raises:
        LauncherMismatch: ``world_size`` is 1 but a launcher variable says more.
    """
    env = os.environ if environ is None else environ
    if world_size != 1 or config.skip_launcher_check(env):
        return
    for name in LAUNCHER_SIZE_VARS:
        value = env.get(name, "")
        if not (value.isdigit() and int(value) > 1):
            continue
        started = (
            f"the launcher started {value} processes ({name}={value}) but MPI "
            "sees a world of 1 rank"
        )
        skip = f"(set {config.SKIP_LAUNCHER_CHECK}=1 to run anyway)"
        if name == "SLURM_STEP_NUM_TASKS":
            # srun without an MPI plugin sets only its own variables.
            raise LauncherMismatch(
                f"{started}: srun gave the processes no MPI wire-up, so each would "
                "run alone. Use srun --mpi=pmix (srun --mpi=list shows what this "
                f"Slurm offers), or mpiexec inside the allocation {skip}"
            )
        raise LauncherMismatch(
            f"{started}: mpi4py is using a different MPI library than the mpiexec "
            "that started it, so each process would run alone. Use the mpiexec of "
            "the library that 'python -m mpi4py --mpi-library' names, or rebuild "
            f"mpi4py against your MPI {skip}"
        )


def launcher_rank(environ: Mapping[str, str]) -> int:
    """Return this process's rank as its launcher says (0 when none says)."""
    for name in LAUNCHER_RANK_VARS:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def start_init_watchdog(seconds: float) -> Callable[[], None]:
    """Leave with status 1 if MPI has not started within ``seconds``.

    A rank that dies while the others are in ``MPI_Init`` can leave them
    waiting for ever (seen with ULFM fault tolerance on). ``MPI_Init`` holds
    the GIL, so no Python thread can act: faulthandler's C watchdog ends the
    process, and a forked watcher says why first.

    Returns:
        Call it once MPI has started, to dismiss both.
    """
    if not hasattr(os, "fork") or seconds <= 0:
        return lambda: None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the watcher
        os.close(write_end)
        ready, _, _ = select.select([read_end], [], [], seconds)
        if not ready:
            rank = launcher_rank(dict(os.environ))
            print_error(
                f"[{rank}@{socket.gethostname()}] MPI did not start within {seconds:g} s "
                "(did another rank fail during start-up?); giving up "
                f"(set {config.INIT_TIMEOUT} to wait longer)"
            )
        os._exit(0)
    os.close(read_end)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - faulthandler needs it open
    faulthandler.dump_traceback_later(seconds + 0.5, exit=True, file=devnull)

    def dismiss() -> None:
        faulthandler.cancel_dump_traceback_later()
        devnull.close()
        os.close(write_end)
        os.waitpid(pid, 0)

    return dismiss


def report_before_mpi(message: str) -> None:
    """Report an error found before MPI started: launcher rank 0 prints it.

    The other ranks wait a moment before their non-zero exit, which makes the
    launcher end the job: else it could kill rank 0 before its line is out.
    """
    if launcher_rank(dict(os.environ)) == 0:
        print_error(message)
    else:
        time.sleep(1.0)
