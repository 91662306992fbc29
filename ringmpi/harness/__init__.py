"""Start-up and shutdown of a program under ``mpiexec``: one error line, abort on crash, watchdogs.

:func:`launch` runs a program's ``main(argv)`` (:mod:`._harness`); before MPI
starts it checks what the launcher says (:mod:`._launcher`); every program's
command line is an :class:`ArgumentParser` with its argument types
(:mod:`._args`); :class:`ProgressBar` is the progress bar (:mod:`._progress`).
"""

from __future__ import annotations

from ..base.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    LauncherMismatch,
    RingmpiError,
    UsageError,
)
from ._args import (
    ArgumentParser,
    arg_type,
    int_arg,
    memory_size,
    plural,
    positive_float,
    script_name,
)
from ._harness import (
    Watchdog,
    fill_closed_std_fds,
    launch,
    print_result,
    quiet_stdout,
    rank_prefix,
    start_watchdog,
)
from ._launcher import (
    LAUNCHER_RANK_VARS,
    LAUNCHER_SIZE_VARS,
    check_launcher,
    launcher_rank,
    report_before_mpi,
)
from ._progress import ProgressBar

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "LAUNCHER_RANK_VARS",
    "LAUNCHER_SIZE_VARS",
    "ArgumentParser",
    "LauncherMismatch",
    "ProgressBar",
    "RingmpiError",
    "UsageError",
    "Watchdog",
    "arg_type",
    "check_launcher",
    "fill_closed_std_fds",
    "int_arg",
    "launch",
    "launcher_rank",
    "memory_size",
    "plural",
    "positive_float",
    "print_result",
    "quiet_stdout",
    "rank_prefix",
    "report_before_mpi",
    "script_name",
    "start_watchdog",
]
