"""Start-up and shutdown shared by every ``python -m ringmpi.<program>``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Callable, NoReturn

from ..base import config, mpilib
from ..base.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    ConfigError,
    LauncherMismatch,
    OutputClosed,
    OutputError,
    RingmpiError,
    degraded,
    format_exception,
    print_error,
    write_stderr,
)
from ._launcher import (
    check_launcher,
    report_before_mpi,
    start_init_watchdog,
)


def _rank() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank() if MPI.Is_initialized() else 0


def _log_ours() -> None:
    """Show the library's warnings, each with its rank, on stderr.

    Only the ``ringmpi`` loggers: the root logger is left to the program
    (a script under ``ringmpi.run`` calls ``logging.basicConfig`` itself).
    """
    ours = logging.getLogger("ringmpi")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"{rank_prefix()} %(levelname)s: %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.WARNING)
        ours.propagate = False  # not twice when the program logs to stderr too


def rank_prefix(rank: int | None = None) -> str:
    """Return the ``[rank@host]`` prefix for per-rank diagnostics."""
    return f"[{_rank() if rank is None else rank}@{socket.gethostname()}]"


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
        if sys.stdout is None:  # started with stdout closed (>&-)
            raise OutputError("cannot write the results: standard output is closed")
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise OutputClosed("the output was closed") from None
    except OSError as exc:
        where = file or "standard output"
        raise OutputError(f"cannot write the results to {where}: {exc.strerror or exc}") from None


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def fill_closed_std_fds() -> None:
    """Open /dev/null on whichever of fds 0, 1, 2 the process started without.

    Started with ``2>&-``, the next file opened (MPI's, the journal) would get
    fd 2 and receive whatever C code writes to stderr. Python's ``sys.stderr``
    stays None, so that nothing is written to it.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)


def flush_std() -> None:
    """Flush stdout and stderr, if the process has them."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()


def _leave_without_finalize(status: int) -> NoReturn:
    flush_std()
    os._exit(status)


def _process_failure(exc: BaseException) -> str | None:
    """The line for an MPI error that means a rank was lost (ULFM), else None."""
    from mpi4py import MPI

    classes = {
        getattr(MPI, name)
        for name in ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING", "ERR_REVOKED")
        if hasattr(MPI, name)
    }
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, MPI.Exception) and error.Get_error_class() in classes:
            break
        error = error.__cause__ or error.__context__
    else:
        return None
    lost = _failed_ranks()
    who = (
        f"lost {'rank' if len(lost) == 1 else 'ranks'} {', '.join(map(str, lost))}"
        if lost
        else "lost a rank"
    )
    return (
        f"{rank_prefix()} {who} (it died): MPI reports {error}; this run is not fault "
        "tolerant (pass --fault-tolerant, or fault_tolerant=True to the farm, to survive "
        "lost workers)"
    )


def _failed_ranks() -> list[int]:
    """The ranks of ``COMM_WORLD`` this process knows have failed (ULFM)."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    try:
        world.Ack_failed()
        failed = world.Get_failed()
    except (MPI.Exception, NotImplementedError, AttributeError):
        return []
    group = world.Get_group()
    try:
        ranks = failed.Translate_ranks(list(range(failed.Get_size())), group)
        return sorted(r for r in ranks if r >= 0)
    finally:
        failed.Free()
        group.Free()


def _print_traceback(exc: BaseException) -> None:
    prefix = rank_prefix()
    text = format_exception(exc)
    lines = [f"{prefix} {line}" for line in text.rstrip("\n").splitlines()]
    write_stderr("\n".join(lines))


def _abort(status: int) -> NoReturn:
    """End the whole job now: other ranks may be blocked waiting on this one."""
    from mpi4py import MPI

    flush_std()
    # Let the launcher forward what was just written before its own abort
    # report, so the error line comes first and whole.
    if MPI.COMM_WORLD.Get_size() == 1:
        # Nobody else to stop; and a singleton's Abort prints a help text
        # that MPI looks for under its build prefix, missing from the wheels.
        os._exit(status)
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
        print_error(
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


#: The words that ask a program about itself, answered without MPI.
_ABOUT = ("-h", "--help", "-V", "--version")


def _asks_about_itself(words: Sequence[str]) -> bool:
    """Whether ``words`` hold ``--help`` or ``--version`` (or a prefix argparse
    takes for one) before a ``--``."""
    for word in words:
        if word == "--":
            return False
        if word in _ABOUT or (
            len(word) > 3 and word.startswith("--") and any(a.startswith(word) for a in _ABOUT)
        ):
            return True
    return False


def launch(
    main: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None = None,
    *,
    parser: Callable[[], argparse.ArgumentParser] | None = None,
) -> int:
    """Run ``main(argv)`` as an MPI program and return its exit status.

    Expected failures (``RingmpiError``) become one ``error:`` line. A
    collective one (bad usage) is printed by rank 0 and every rank returns its
    exit status; any other is printed by the rank that raised it, which then
    aborts the job. An uncaught exception prints its traceback once, each line
    prefixed ``[rank@host]``, and aborts the whole job with status 1: without
    that, the other ranks would wait forever in ``MPI_Finalize``.

    Args:
        main: The program; returns its exit status.
        argv: Passed to ``main`` as it is (None: ``main`` reads ``sys.argv``,
            as ``argparse`` does).
        parser: Builds ``main``'s command line. With it, ``--help`` and
            ``--version`` are answered before MPI is loaded: quickly, and
            where there is no MPI library.

    Returns:
        The exit status for ``sys.exit``.
    """
    fill_closed_std_fds()
    if parser is not None:
        status = _answer_without_mpi(parser, sys.argv[1:] if argv is None else argv)
        if status is not None:
            return status
    status = _before_mpi()
    if status is not None:
        return status
    from mpi4py import MPI

    size = MPI.COMM_WORLD.Get_size()
    _log_ours()
    try:
        try:
            config.check()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            check_launcher(size)
        except LauncherMismatch as exc:
            report_before_mpi(str(exc))
            return exc.exit_code
        status = main(argv)
        if degraded():
            _leave_without_finalize(status)
        return status
    except BaseException as exc:
        return _failed(exc, size)


def _answer_without_mpi(
    parser: Callable[[], argparse.ArgumentParser], words: Sequence[str]
) -> int | None:
    """Answer ``--help`` and ``--version`` without MPI; None: run the program.

    Bad usage found on the way is reported here too, by the launcher's rank 0.
    """
    if not _asks_about_itself(words):
        return None
    try:
        parser().parse_args(words)
    except SystemExit as exc:  # what --help and --version end with
        return exc.code if isinstance(exc.code, int) else 0
    except RingmpiError as exc:
        report_before_mpi(str(exc))
        return exc.exit_code
    return None


def _before_mpi() -> int | None:
    """Check what must be right before MPI starts, then start it.

    Returns:
        An exit status if the program must not run, else None.
    """
    missing = mpilib.missing_library()
    if missing:
        report_before_mpi(missing)
        return EXIT_FAILURE
    try:
        init_timeout = config.init_timeout()
    except ValueError as exc:
        # MPI has not started: the launcher's rank 0 speaks for every rank.
        report_before_mpi(str(exc))
        return EXIT_USAGE
    dismiss = start_init_watchdog(init_timeout)
    from mpi4py import MPI  # MPI starts with the import, unless told not to

    dismiss()
    try:
        mpilib.check_ready()
    except RingmpiError as exc:
        report_before_mpi(str(exc))
        return exc.exit_code
    MPI.COMM_WORLD.Get_size()
    return None


def _failed(exc: BaseException, size: int) -> int:
    """Turn what ended the program into one message and an exit status.

    A collective ``RingmpiError`` is reported by rank 0 and every rank
    returns; any other is reported by its rank, which aborts the job, since
    the others may be waiting on it.
    """
    if isinstance(exc, OutputClosed):
        quiet_stdout()
        return 0
    if isinstance(exc, RingmpiError):
        if exc.quiet:
            return exc.exit_code
        if exc.collective:
            if _rank() == 0:
                print_error(str(exc))
            if degraded():
                _leave_without_finalize(exc.exit_code)
            return exc.exit_code
        print_error(str(exc))
        status = exc.exit_code
    elif isinstance(exc, SystemExit):
        # sys.exit(0) and --help end normally; a non-zero exit from one rank
        # must not leave the others waiting.
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not code or size == 1:
            raise exc
        if not isinstance(exc.code, int) and exc.code is not None:
            print_error(f"{rank_prefix()} {exc.code}")
        status = code
    elif isinstance(exc, KeyboardInterrupt):
        print_error(f"{rank_prefix()} interrupted")
        status = EXIT_INTERRUPTED
    elif _process_failure(exc) is not None:
        # Under 'mpiexec --with-ft ulfm' a lost rank is an MPI error on every
        # survivor that talks to it: rank 0 reports, the others wait for its abort.
        if _rank() != 0:
            time.sleep(1.0)
        print_error(_process_failure(exc) or "")
        status = EXIT_FAILURE
    else:
        _print_traceback(exc)
        status = EXIT_FAILURE
    if size > 1:
        _abort(status)
    return status
