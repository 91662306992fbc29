"""The Fibonacci benchmark's approaches that run in one process: Python
pools and child processes, and the article's kernel in C (ctypes)."""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import fib as fibmod
from ..farm import balance

C_SOURCE = """\
/* The article's slow Fibonacci, in C: naive recursion, base case n <= 2. */
#ifdef RINGMPI_COUNT_CALLS
long long ringmpi_fib_calls = 0;
#endif

long long ringmpi_fib(int n)
{
#ifdef RINGMPI_COUNT_CALLS
    ringmpi_fib_calls++;
#endif
    if (n <= 2)
        return 1;
    return ringmpi_fib(n - 1) + ringmpi_fib(n - 2);
}
"""


class Unavailable(Exception):
    """An approach cannot run here; the message says why."""


# --- the C kernel ----------------------------------------------------------------


def find_compiler(environ: dict[str, str] | None = None) -> str | None:
    """Return the C compiler command: ``$CC``, else ``cc`` or ``gcc`` on PATH."""
    env = os.environ if environ is None else environ
    if env.get("CC"):
        return env["CC"]
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def build_c_kernel(
    directory: str | os.PathLike[str], compiler: str | None = None, count_calls: bool = False
) -> Path:
    """Compile ``C_SOURCE`` into a shared library in ``directory``.

    Args:
        directory: Where the source and the library are written.
        compiler: The compiler command (default ``find_compiler()``).
        count_calls: Build the variant that counts its calls in the global
            ``ringmpi_fib_calls`` (for tests; the benchmark's kernel does not).

    Returns:
        The path of the shared library.

    Raises:
        Unavailable: No compiler, or it failed.
    """
    compiler = compiler or find_compiler()
    if compiler is None:
        raise Unavailable("no C compiler (set CC, or install cc/gcc) to build the C kernel")
    src = Path(directory) / "ringmpi_fib.c"
    lib = Path(directory) / "ringmpi_fib.so"
    src.write_text(C_SOURCE)
    argv = [*shlex.split(compiler), "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)]
    if count_calls:
        argv.insert(-1, "-DRINGMPI_COUNT_CALLS")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"the C compiler {compiler!r} could not run: {exc}") from None
    if done.returncode != 0:
        raise Unavailable(
            f"the C compiler failed ({shlex.join(argv)}): {done.stderr.strip()[:300]}"
        )
    return lib


def load_c_kernel(lib: str | os.PathLike[str]) -> Callable[[int], int]:
    """Load the compiled kernel; calls through ctypes release the GIL."""
    dll = ctypes.CDLL(str(lib))
    kernel = dll.ringmpi_fib
    kernel.argtypes = [ctypes.c_int]
    kernel.restype = ctypes.c_longlong
    return kernel


# --- the approaches that run on rank 0 alone ---------------------------------------


def noop(x: Any) -> Any:
    return x


CHILD_CODE = (
    "import json, sys\n"
    "from ringmpi.fib import fib\n"
    "print(json.dumps([fib(int(n)) for n in sys.stdin.read().split()]))\n"
)


def run_children(tasks: Sequence[int], processes: int) -> list[int]:
    """Start ``processes`` independent Python children, each computing its share.

    Shares are balanced by cost (largest task to the least loaded child), as
    a parent that knows its tasks would split them; the children start,
    compute and print their results as JSON, which the parent reads.
    """
    shares = balance(len(tasks), processes, [fibmod.calls(n) for n in tasks])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    children: list[subprocess.Popen[str]] = []
    results: list[int] = [0] * len(tasks)
    try:
        for share in shares:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD_CODE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            children.append(child)
            assert child.stdin is not None
            with child.stdin:
                child.stdin.write(" ".join(str(tasks[i]) for i in share))
        for share, child in zip(shares, children):
            assert child.stdout is not None
            with child.stdout:
                text = child.stdout.read()
            if child.wait() != 0:
                raise RuntimeError(f"a child exited with status {child.returncode}")
            for i, value in zip(share, json.loads(text)):
                results[i] = value
    finally:
        # Every pipe closed and every child waited for, on every path: no
        # ResourceWarning under -X dev, no child left running.
        for child in children:
            if child.poll() is None:
                child.kill()
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    pipe.close()
            child.wait()
    return results


class LocalRunner:
    """Runs the approaches that need no MPI, on rank 0, with pools kept warm."""

    def __init__(self, processes: int, workdir: str):
        self.processes = processes
        self.workdir = workdir
        self._pool: Any = None
        self._ppe: concurrent.futures.ProcessPoolExecutor | None = None
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._kernel: Callable[[int], int] | None = None
        self._kernel_error: str | None = None

    def prepare(self, approach: str) -> Callable[[list[int]], list[int]]:
        """Start (once) what ``approach`` needs; return the timed call.

        Raises:
            Unavailable: The approach cannot run here.
        """
        p = self.processes
        if approach == "sequential":
            return lambda tasks: [fibmod.fib(n) for n in tasks]
        if approach == "pool":
            if self._pool is None:
                self._pool = multiprocessing.Pool(p)
                self._pool.map(noop, range(4 * p))
            return lambda tasks: self._pool.map(fibmod.fib, tasks)
        if approach == "ppe":
            if self._ppe is None:
                self._ppe = concurrent.futures.ProcessPoolExecutor(p)
                list(self._ppe.map(noop, range(4 * p)))
            ppe = self._ppe
            return lambda tasks: list(ppe.map(fibmod.fib, tasks))
        if approach == "children":
            return lambda tasks: run_children(tasks, p)
        kernel = self._c_kernel()
        if approach == "c-sequential":
            return lambda tasks: [kernel(n) for n in tasks]
        if approach == "c-threads":
            if self._threads is None:
                self._threads = concurrent.futures.ThreadPoolExecutor(p)
                list(self._threads.map(kernel, range(4 * p)))
            threads = self._threads
            return lambda tasks: list(threads.map(kernel, tasks))
        raise ValueError(f"not a local approach: {approach}")

    def _c_kernel(self) -> Callable[[int], int]:
        if self._kernel is None and self._kernel_error is None:
            try:
                self._kernel = load_c_kernel(build_c_kernel(self.workdir))
            except Unavailable as exc:
                self._kernel_error = str(exc)
        if self._kernel is None:
            raise Unavailable(self._kernel_error or "the C kernel is unavailable")
        return self._kernel

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
        if self._ppe is not None:
            self._ppe.shutdown()
        if self._threads is not None:
            self._threads.shutdown()
