"""Start-up and shutdown shared by every ``python -m ringmpi.<program>``."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import math
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Callable, NoReturn, TypeVar

from . import config, mpilib
from .errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    ConfigError,
    LauncherMismatch,
    OutputClosed,
    OutputError,
    RingmpiError,
    UsageError,
    degraded,
    format_exception,
)

# Environment variables through which launchers tell a process the size of
# its job. If MPI says the world has one rank but one of these says more,
# the launcher and the MPI library that mpi4py loaded do not belong together.
T = TypeVar("T")

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


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser that raises ``UsageError`` instead of exiting.

    Every rank parses the same argv, so every rank raises the same error and
    ``launch`` can report it once, from rank 0.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")

    def print_help(self, file=None) -> None:
        if _rank() == 0:
            super().print_help(file)

    def print_usage(self, file=None) -> None:
        if _rank() == 0:
            super().print_usage(file)

    def _print_message(self, message: str, file=None) -> None:
        # --version and the like print through here.
        if _rank() == 0:
            super()._print_message(message, file)


def arg_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Return ``parse`` as an argparse ``type``: its ``ValueError`` becomes a
    usage error with the same message."""

    def checked(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    checked.__name__ = parse.__name__
    return checked


def int_arg(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """Return an argparse ``type``: an integer from ``low`` to ``high``."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"invalid integer {text!r}") from None
        if low is not None and high is not None and not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, not {value}")
        if low == 0 and value < 0:
            raise ValueError(f"must not be negative, not {value}")
        if low is not None and value < low:
            raise ValueError(f"must be at least {low}, not {value}")
        if high is not None and value > high:
            raise ValueError(f"must be at most {high}, not {value}")
        return value

    return arg_type(integer)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"invalid number {text!r}") from None
    if not 0 < value < math.inf:
        raise ValueError(f"must be a positive finite number, not {text}")
    return value


#: An argparse ``type``: a finite number greater than 0.
positive_float = arg_type(_positive_float)


def _rank() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank() if MPI.Is_initialized() else 0


def rank_prefix(rank: int | None = None) -> str:
    """Return the ``[rank@host]`` prefix for per-rank diagnostics."""
    return f"[{_rank() if rank is None else rank}@{socket.gethostname()}]"


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


def _launcher_rank(environ: dict[str, str]) -> int:
    for name in LAUNCHER_RANK_VARS:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def print_result(text: str, file: str | None = None) -> None:
    """Write ``text`` and a newline to stdout (or to ``file``), now.

    Raises:
        OutputClosed: The reader closed the pipe (``| head``); ``launch``
            then ends quietly.
        OutputError: Any other failure to write, with the reason.
    """
    try:
        if file is not None:
            with open(file, "w") as out:
                out.write(text + "\n")
            return
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise OutputClosed("the output was closed") from None
    except OSError as exc:
        where = file or "standard output"
        raise OutputError(f"cannot write the results to {where}: {exc.strerror or exc}") from None


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _write_stderr(text: str) -> None:
    # One write, newline included: with unbuffered output (python -u,
    # PYTHONUNBUFFERED=1) print() writes the newline separately, and mpiexec's
    # own abort message can land between the two.
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _leave_without_finalize(status: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _print_error(message: str) -> None:
    _write_stderr(f"error: {message}")


def _print_traceback(exc: BaseException) -> None:
    prefix = rank_prefix()
    text = format_exception(exc)
    lines = [f"{prefix} {line}" for line in text.rstrip("\n").splitlines()]
    _write_stderr("\n".join(lines))


def _abort(status: int) -> NoReturn:
    """End the whole job now: other ranks may be blocked waiting on this one."""
    from mpi4py import MPI

    sys.stdout.flush()
    sys.stderr.flush()
    # Let the launcher forward what was just written before its own abort
    # report, so the error line comes first and whole.
    time.sleep(0.2)
    MPI.COMM_WORLD.Abort(status)
    raise SystemExit(status)  # not reached


class Watchdog:
    """Abort the whole job if the run is still going after ``seconds``.

    Every rank starts one; rank 0's fires first and reports, the others fire
    a little later in case rank 0 cannot (stopped, or stuck in a call that
    holds the GIL). Once it has fired the run has failed: :meth:`stop` then
    never returns, so no result is printed after the error line.

    Args:
        seconds: The time limit.
        what: What is timed, for the message.
    """

    def __init__(self, seconds: float, what: str = "the run"):
        self.seconds = seconds
        self.what = what
        self.rank = _rank()
        self._lock = threading.Lock()
        self._state = "running"  # then "stopped" or "fired"
        # Staggered, so that one rank reports and aborts before the next wakes.
        delay = seconds if self.rank == 0 else seconds + 2.0 + 0.2 * min(self.rank, 20)
        self._timer = threading.Timer(delay, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._state != "running":
                return
            self._state = "fired"
        _print_error(
            f"{rank_prefix(self.rank)} {self.what} did not finish within "
            f"{self.seconds:g} s (--timeout)"
        )
        # If MPI cannot abort (its daemon is gone), leave anyway.
        last_resort = threading.Timer(5.0, os._exit, (EXIT_TIMEOUT,))
        last_resort.daemon = True
        last_resort.start()
        _abort(EXIT_TIMEOUT)

    def stop(self) -> None:
        """Stop the watchdog when the run ended in time.

        If it has already fired, wait here for the abort it started.
        """
        with self._lock:
            if self._state == "running":
                self._state = "stopped"
                self._timer.cancel()
                return
        threading.Event().wait()  # the abort (or its last resort) ends the process


def start_watchdog(seconds: float, what: str = "the run") -> Watchdog:
    """Start a :class:`Watchdog`; call its ``stop()`` when the run ends in time."""
    return Watchdog(seconds, what)


def _start_init_watchdog(seconds: float) -> Callable[[], None]:
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
            rank = _launcher_rank(dict(os.environ))
            _print_error(
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


def launch(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` as an MPI program and return its exit status.

    Expected failures (``RingmpiError``) become one ``error:`` line. A
    collective one (bad usage) is printed by rank 0 and every rank returns its
    exit status; any other is printed by the rank that raised it, which then
    aborts the job. An uncaught exception prints its traceback once, each line
    prefixed ``[rank@host]``, and aborts the whole job with status 1: without
    that, the other ranks would wait forever in ``MPI_Finalize``.

    Args:
        main: The program; returns its exit status.
        argv: Arguments for ``main`` (default ``sys.argv[1:]``).

    Returns:
        The exit status for ``sys.exit``.
    """
    missing = mpilib.missing_library()
    if missing:
        _print_error(missing)
        return EXIT_FAILURE
    try:
        init_timeout = config.init_timeout()
    except ValueError as exc:
        # MPI has not started: the launcher's rank 0 speaks for every rank.
        if _launcher_rank(dict(os.environ)) == 0:
            _print_error(str(exc))
        return EXIT_USAGE
    dismiss = _start_init_watchdog(init_timeout)
    from mpi4py import MPI

    dismiss()
    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    logging.basicConfig(format=f"{rank_prefix()} %(levelname)s: %(message)s", level=logging.WARNING)
    try:
        try:
            check_launcher(size)
        except LauncherMismatch as exc:
            if _launcher_rank(dict(os.environ)) == 0:
                _print_error(str(exc))
            return exc.exit_code
        try:
            config.check()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        status = main(argv)
        if degraded():
            _leave_without_finalize(status)
        return status
    except OutputClosed:
        _quiet_stdout()
        return 0
    except RingmpiError as exc:
        if exc.collective:
            if comm.Get_rank() == 0:
                _print_error(str(exc))
            if degraded():
                _leave_without_finalize(exc.exit_code)
            return exc.exit_code
        _print_error(str(exc))
        if size > 1:
            _abort(exc.exit_code)
        return exc.exit_code
    except SystemExit as exc:
        # sys.exit(0) and --help end normally; a non-zero exit from one rank
        # must not leave the others waiting.
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code and size > 1:
            if not isinstance(exc.code, int) and exc.code is not None:
                _print_error(f"{rank_prefix()} {exc.code}")
            _abort(code)
        raise
    except KeyboardInterrupt:
        _print_error(f"{rank_prefix()} interrupted")
        if size > 1:
            _abort(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except BaseException as exc:
        _print_traceback(exc)
        if size > 1:
            _abort(EXIT_FAILURE)
        return EXIT_FAILURE


def plural(count: int, word: str) -> str:
    """Return ``"1 rank"``, ``"2 ranks"``: the count and the word, plural when not 1."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
