"""Errors that end a run with one ``error:`` line, exit codes, the degraded flag.

Library code (the farm) raises these; :func:`ringmpi.harness.launch` turns them
into one line and an exit status. Nothing here needs MPI.
"""

from __future__ import annotations

import sys
import traceback

#: Exit status for any failure without a more specific one.
EXIT_FAILURE = 1
#: Bad usage, as argparse.
EXIT_USAGE = 2
#: A run past its time limit, as coreutils' timeout.
EXIT_TIMEOUT = 124
#: Stopped by SIGINT (Ctrl-C), as a shell reports it: 128 + 2.
EXIT_INTERRUPTED = 130


class RingmpiError(Exception):
    """An expected failure, reported as one ``error:`` line.

    Attributes:
        exit_code: The exit status of the job.
        collective: True when every rank raises the same error (bad usage, a
            check that all ranks made together), so that rank 0 reports it and
            every rank simply exits. Otherwise the rank that raised it reports
            it and aborts the job, since the others may be waiting on it.
        quiet: True when another rank reports the same failure and ends the
            job: this rank says nothing and exits with ``exit_code``.
    """

    exit_code = EXIT_FAILURE
    collective = False
    quiet = False


class UsageError(RingmpiError):
    """Bad arguments; raised identically on every rank."""

    exit_code = EXIT_USAGE
    collective = True


class ConfigError(RingmpiError):
    """A ``RINGMPI_*`` variable holds a bad value; every rank reads the same."""

    exit_code = EXIT_USAGE
    collective = True


class OutputError(RingmpiError):
    """The results could not be written (a full disk, say)."""


class OutputClosed(RingmpiError):
    """Whoever read the output stopped reading (``| head``): end quietly."""

    exit_code = 0


class LauncherMismatch(RingmpiError):
    """The launcher started N processes but each sees a world of one rank."""

    collective = True


_degraded = False


def mark_degraded() -> None:
    """Note that the job lost a rank and carried on (ULFM fault tolerance).

    ``launch`` then leaves without ``MPI_Finalize``, which can hang after a
    loss (open-mpi/ompi#11404); under ``mpiexec --with-ft ulfm`` that ends the
    rank with its own exit status.
    """
    global _degraded
    _degraded = True


def degraded() -> bool:
    """Return whether this rank saw the job lose a rank."""
    return _degraded


def format_exception(exc: BaseException) -> str:
    """Return the full traceback text of ``exc``, chained exceptions included."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def write_stderr(text: str) -> None:
    # One write, newline included: with unbuffered output (python -u,
    # PYTHONUNBUFFERED=1) print() writes the newline separately, and mpiexec's
    # own abort message can land between the two.
    # Started with stderr closed (2>&-): Python has no sys.stderr, and the
    # user asked for no messages; the exit status still tells.
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def print_error(message: str) -> None:
    write_stderr(f"error: {message}")
