"""Command-line pieces shared by every program: the parser and argument types.

Every rank parses the same argv, so every rank raises the same ``UsageError``
and ``ringmpi.harness.launch`` reports it once, from rank 0.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from typing import Any, Callable, NoReturn, TypeVar

from ..base.errors import TooLarge, UsageError, parse_int, quoted, shown
from ..base.memory import parse_size
from ._launcher import launcher_rank

T = TypeVar("T")

#: A word an error line would not quote whole (paths are rarely this long).
_LONG_WORD = re.compile(r"[^\s,]{101,}")


def _rank() -> int:
    # Before MPI has started (--help, --status) the launcher's variables say
    # which rank this is; importing mpi4py.MPI here would start MPI.
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized():
        return MPI.COMM_WORLD.Get_rank()
    return launcher_rank(dict(os.environ))


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser that raises ``UsageError`` instead of exiting.

    Every rank parses the same argv, so every rank raises the same error and
    ``launch`` can report it once, from rank 0.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["prog"] = script_name(kwargs.get("prog"))
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # argparse quotes what was typed (unrecognized arguments, a bad
        # choice): a word of 100,000 characters is cut to its start.
        message = _LONG_WORD.sub(lambda m: shown(m.group(0)), message)
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


def script_name(prog: str | None) -> str | None:
    """Return ``prog`` (``python -m ringmpi.X``) as the user typed it: the
    console script ``ringmpi-X`` when that is what runs."""
    if prog is None or not prog.startswith("python -m ringmpi"):
        return prog
    module = prog.removeprefix("python -m ")
    script = module.replace(".", "-")
    ran = os.path.basename(sys.argv[0] or "")
    if ran == "ringmpi" and module.count(".") == 1:  # a subcommand: ringmpi run
        return module.replace(".", " ")
    return script if ran == script else prog


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
            value: float = parse_int(text)
        except TooLarge:
            # Past any bound: compared as an infinity, shown cut.
            value = -math.inf if text.strip().startswith("-") else math.inf
        typed = shown(text.strip())
        if low is not None and high is not None and not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, not {typed}")
        if low == 0 and value < 0:
            raise ValueError(f"must not be negative, not {typed}")
        if low is not None and value < low:
            raise ValueError(f"must be at least {low}, not {typed}")
        if high is not None and value > high:
            raise ValueError(f"must be at most {high}, not {typed}")
        if math.isinf(value):
            raise ValueError(f"{typed} is too large")
        return int(value)

    return arg_type(integer)


#: The shortest and the longest time limit one may ask for: a millisecond, a year.
MIN_SECONDS, MAX_SECONDS = 1e-3, 365 * 86400.0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"invalid number {quoted(text)}") from None
    if not 0 < value < math.inf:
        raise ValueError(f"must be a positive finite number, not {shown(text)}")
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        raise ValueError(
            f"must be a number of seconds from {MIN_SECONDS:g} to {MAX_SECONDS:g}, "
            f"not {shown(text)}"
        )
    return value


#: An argparse ``type``: seconds, from a millisecond to a year.
positive_float = arg_type(_positive_float)

#: An argparse ``type``: a size in bytes, ``512M``, ``2G``.
memory_size = arg_type(parse_size)


def plural(count: int, word: str) -> str:
    """Return ``"1 rank"``, ``"2 ranks"``: the count and the word, plural when not 1."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
