"""Errors that end a run with one ``error:`` line, exit codes, the degraded flag.

Library code (the farm) raises these; :func:`ringmpi.harness.launch` turns them
into one line and an exit status. Nothing here needs MPI.
"""

from __future__ import annotations

import os
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


#: The longest piece of user input that an error line quotes whole.
SHOWN_CHARS = 40
#: Digits beyond which an integer on a command line is too large for any
#: option, refused without converting it (Python refuses past 4300 digits).
MAX_DIGITS = 30


def shown(text: object) -> str:
    """Return ``text`` for an error line: whole when short, else its start and length.

    Whatever the user typed (100,000 digits), the error stays one short line.
    """
    text = str(text)
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:20]}... ({len(text)} characters)"


def quoted(text: str) -> str:
    """Return ``repr(text)`` when short, else its quoted start and its length."""
    if len(text) <= SHOWN_CHARS:
        return repr(text)
    return f"{text[:20]!r}... ({len(text)} characters)"


class TooLarge(ValueError):
    """An integer with more digits than any option takes."""


def parse_int(text: str, max_digits: int = MAX_DIGITS) -> int:
    """``int(text)``, with a short ``ValueError`` for any text: never echoes
    it whole, never asks to raise ``sys.set_int_max_str_digits``.

    Raises:
        TooLarge: More than ``max_digits`` digits (leading zeros aside).
        ValueError: Not an integer.
    """
    word = text.strip()
    digits = word.lstrip("+-").replace("_", "")
    if digits.isdigit() and len(digits.lstrip("0")) > max_digits:
        raise TooLarge(f"{shown(word)} is too large")
    try:
        return int(word)
    except ValueError:
        pass
    raise ValueError(f"invalid integer {quoted(text)}")


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


def raised_alike(exc: RingmpiError, speaks: bool) -> RingmpiError:
    """Mark ``exc``, which every rank raises alike, for a plain script's end.

    If nothing catches it, the rank that ``speaks`` prints it as one
    ``error:`` line, with the script's line that led to it, and the other
    ranks print nothing: not the same traceback from every rank. Any other
    uncaught exception goes to the hook that was in place.
    """
    exc.speaks = speaks  # type: ignore[attr-defined]
    _install_hook()
    return exc


_previous_hook = [sys.excepthook]


def _install_hook() -> None:
    """Put :func:`_one_line` in front of whatever ``sys.excepthook`` is now."""
    if sys.excepthook is not _one_line:
        _previous_hook[0] = sys.excepthook
        sys.excepthook = _one_line


_OURS = __file__.rsplit("/base/", 1)[0]


_NONE_HINT = (
    "{what}() gives None on every rank but the root, whose {name} it is: "
    "use it under 'if {name} is not None:', or run the script with "
    "'mpiexec -n N python -m ringmpi.run {script}', where it runs on the root alone"
)


#: Set on a worker whose executor or pool gave None (a plain script's
#: habit): ``(hint, speaks)`` for an uncaught error about ``None`` there.
_none_hint: list[tuple[str, bool]] = []


def hint_on_none(what: str, name: str, speaks: bool) -> None:
    """On a worker given ``None`` by ``with FarmExecutor() as ex:``: if the
    program then dies of using that ``None`` (``'NoneType' object has no
    attribute 'map'``), the rank that ``speaks`` shows the traceback and one
    ``error:`` line with the fix (``what``: the class, ``name``: the usual
    variable); the other workers, which die of the same, say nothing (not the
    same traceback from every rank)."""
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0].endswith(".py") else ""
    hint = _NONE_HINT.format(what=what, name=name, script=script or "script.py")
    _none_hint[:] = [(hint, speaks)]
    _install_hook()


def _one_line(kind, exc, tb) -> None:
    speaks = getattr(exc, "speaks", None)
    if _none_hint and isinstance(exc, (AttributeError, TypeError)) and "NoneType" in str(exc):
        hint, speaks = _none_hint[0]
        if speaks:
            _previous_hook[0](kind, exc, tb)
            print_error(hint)
        return
    if not isinstance(exc, RingmpiError) or speaks is None:
        _previous_hook[0](kind, exc, tb)
        return
    if speaks:
        theirs = [f for f in traceback.extract_tb(tb) if not f.filename.startswith(_OURS)]
        where = f" ({theirs[-1].filename}, line {theirs[-1].lineno})" if theirs else ""
        print_error(f"{exc}{where}")
