"""Run a script on the root while the other ranks serve its executors and pools."""

from __future__ import annotations

import argparse
import builtins
import io
import os
import runpy
import sys
import traceback
import types
from collections.abc import Sequence

from .. import __version__
from ..base.errors import EXIT_FAILURE, EXIT_INTERRUPTED, RingmpiError, UsageError, print_error
from ..executor import Main, hosting, serve_hosted
from ..harness import ArgumentParser, launch

PROG = "python -m ringmpi.run"


def build_parser() -> argparse.ArgumentParser:
    """The command line: options, then the script (or ``-m module``) and its own arguments."""
    parser = ArgumentParser(
        prog=PROG,
        usage="%(prog)s [-h] [-V] (script.py | -m module) [args ...]",
        description=(
            "run a Python script on rank 0; the FarmExecutor and FarmPool it creates "
            "(without a communicator) use the other ranks, which serve until it ends"
        ),
        epilog=(
            "example: mpiexec -n 4 python -m ringmpi.run my_script.py --its-own-flag. "
            "The workers import the script to find its functions: keep what it runs "
            "under 'if __name__ == \"__main__\":'"
        ),
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-m", dest="module", metavar="module", help="run a module, as python -m")
    parser.add_argument("script", nargs="?", help="the script to run (its arguments follow it)")
    return parser


def parse(argv: Sequence[str]) -> Main:
    """Return the script or module to run and its ``sys.argv``.

    Raises:
        UsageError: No script, an unknown option, or a script that is not there.
    """
    argv = list(argv)
    head = _head(argv)
    args = build_parser().parse_args(argv[:head])
    rest = argv[head:]
    if args.module is not None:
        if args.script is not None:
            rest.insert(0, args.script)
        return Main(None, args.module, [args.module, *rest])
    if args.script is None:
        raise UsageError(f"give a script to run, or -m module (see {PROG} --help)")
    if not os.path.isfile(args.script):
        raise UsageError(f"no such script: {args.script}")
    return Main(args.script, None, [args.script, *rest])


def _head(argv: Sequence[str]) -> int:
    """How many words are ringmpi.run's own: its options, then the script
    (or ``-m module``); the rest are the script's."""
    head = 0
    while head < len(argv) and argv[head].startswith("-") and argv[head] != "-m":
        head += 1
    if head < len(argv):
        head += 2 if argv[head] == "-m" else 1
    return min(head, len(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the script on rank 0, serve its executors elsewhere; return the script's status."""
    target = parse(sys.argv[1:] if argv is None else argv)
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    # The workers wait for the script's orders apart from everything else.
    session = world.Dup()
    try:
        if world.Get_rank() != 0:
            serve_hosted(session, target)
            return 0
        with hosting(session):
            return run_script(target)
    finally:
        session.Free()


def _run_file(path: str) -> None:
    """Run the file at ``path`` as ``python path`` does: in a module named
    ``__main__`` that stays ``sys.modules["__main__"]`` once it has run.

    Not ``runpy.run_path``, which puts the module back when the script
    ends: the tasks of an executor the script left open are pickled after
    that, and its functions must still be found as ``__main__.name``.
    """
    with io.open_code(path) as file:
        code = compile(file.read(), path, "exec", dont_inherit=True)
    module = types.ModuleType("__main__")
    module.__file__ = path
    _stay_main(module, {})
    exec(code, module.__dict__)


def _stay_main(module: types.ModuleType, names: dict[str, object]) -> None:
    """Make ``module`` (holding ``names``) ``__main__`` until the job ends."""
    module.__dict__.update(names)
    module.__dict__.setdefault("__builtins__", builtins)
    sys.modules["__main__"] = module


def run_script(target: Main) -> int:
    """Run the script as ``__main__``; return its exit status.

    ``sys.exit(k)`` is status ``k``; an exception prints its traceback (from
    the script's own frames) and is status 1; a ringmpi error is one line.
    """
    sys.argv = list(target.argv)
    try:
        if target.module is not None:
            names = runpy.run_module(target.module, run_name="__main__", alter_sys=True)
            _stay_main(types.ModuleType("__main__"), names)
        else:
            assert target.path is not None
            sys.path[0] = os.path.dirname(os.path.realpath(target.path))
            _run_file(target.path)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print_error(str(exc.code))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED
    except RingmpiError as exc:
        print_error(str(exc))
        return exc.exit_code
    except BaseException as exc:
        tb = exc.__traceback__
        # From the script's first frame: runpy and this module are not its.
        while tb is not None and tb.tb_frame.f_globals.get("__name__") in ("runpy", __name__):
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
        sys.stderr.flush()
        return EXIT_FAILURE
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """``python -m ringmpi.run`` and ``ringmpi run``: ``--help`` and
    ``--version`` (before the script) are answered without MPI."""
    words = list(sys.argv[1:] if argv is None else argv)
    own = words[: _head(words)]
    # Only our own options are asked about: the script's --help is its own.
    asks = any(word.startswith("-") and word != "-m" for word in own)
    return launch(main, words, parser=build_parser if asks else None)
