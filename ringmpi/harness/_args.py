"""Command-line pieces shared by every program: the parser and argument types.

Every rank parses the same argv, so every rank raises the same ``UsageError``
and ``ringmpi.harness.launch`` reports it once, from rank 0.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Callable, NoReturn, TypeVar

from ..base.errors import UsageError
from ._launcher import launcher_rank

T = TypeVar("T")


def _rank() -> int:
    # --help and --version are answered before MPI starts (and where there is
    # no MPI library): then the launcher's rank speaks, and MPI is not loaded.
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized():
        return launcher_rank(os.environ)
    return int(mpi.COMM_WORLD.Get_rank())


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser that raises ``UsageError`` instead of exiting.

    Every rank parses the same argv, so every rank raises the same error and
    ``launch`` can report it once, from rank 0.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["prog"] = script_name(kwargs.get("prog"))
        super().__init__(*args, **kwargs)

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


def script_name(prog: str | None) -> str | None:
    """Return ``prog`` (``python -m ringmpi.X``) as the user typed it: the
    console script ``ringmpi-X`` when that is what runs."""
    if prog is None or not prog.startswith("python -m ringmpi"):
        return prog
    module = prog.removeprefix("python -m ")
    script = module.replace(".", "-")
    return script if os.path.basename(sys.argv[0] or "") == script else prog


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


#: The shortest and the longest time limit one may ask for: a millisecond, a year.
MIN_SECONDS, MAX_SECONDS = 1e-3, 365 * 86400.0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"invalid number {text!r}") from None
    if not 0 < value < math.inf:
        raise ValueError(f"must be a positive finite number, not {text}")
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        raise ValueError(
            f"must be a number of seconds from {MIN_SECONDS:g} to {MAX_SECONDS:g}, not {text}"
        )
    return value


#: An argparse ``type``: seconds, from a millisecond to a year.
positive_float = arg_type(_positive_float)


def plural(count: int, word: str) -> str:
    """Return ``"1 rank"``, ``"2 ranks"``: the count and the word, plural when not 1."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
