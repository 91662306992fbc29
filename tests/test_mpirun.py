"""The test helper that starts processes: timeouts fail with the output and leave nothing behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import mpirun as helper
import pytest

# Prints, then starts a child in a process group of its own (as Open MPI
# starts each rank) and sleeps: killing the parent's group would miss it.
SPAWN_AND_SLEEP = """
import os, subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(120)"], preexec_fn=os.setpgrp
)
print("pid of child:", child.pid, flush=True)
print("partial stderr", file=sys.stderr, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_timeout_kills_the_whole_session_and_fails_with_the_output(pyrun):
    with pytest.raises(pytest.fail.Exception) as info:
        pyrun("-c", SPAWN_AND_SLEEP, timeout=2)
    message = str(info.value)
    assert message.startswith("timed out after 2 s; killed")
    assert "partial stderr" in message
    [line] = [line for line in message.splitlines() if line.startswith("pid of child:")]
    child = int(line.split()[-1])
    assert not helper.is_running(child)


def test_result_of_a_quick_run(pyrun):
    program = "import sys; print('out'); print('error: bad', file=sys.stderr); sys.exit(4)"
    result = pyrun("-c", program)
    assert (result.returncode, result.stdout, result.timed_out) == (4, "out\n", False)
    assert result.error_lines == ["error: bad"]
    assert result.leftovers == []
    assert 0 < result.elapsed < 30
    with pytest.raises(AssertionError, match="exit status 4"):
        result.check(0)


def test_child_env(monkeypatch):
    monkeypatch.setenv("PMI_RANK", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_MCA_btl", "self,tcp")
    env = helper.child_env({"PMI_SIZE": "2"})
    assert "PMI_RANK" not in env and "OMPI_COMM_WORLD_SIZE" not in env
    assert env["PMI_SIZE"] == "2"  # asked for
    assert env["OMPI_MCA_btl"] == "self,tcp"  # a setting, not a launcher's
    assert env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize(("euid", "allowed"), [(0, True), (1000, False)])
def test_child_env_allows_root_only_as_root(monkeypatch, euid, allowed):
    monkeypatch.delenv("OMPI_ALLOW_RUN_AS_ROOT", raising=False)
    monkeypatch.delenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    env = helper.child_env()
    assert ("OMPI_ALLOW_RUN_AS_ROOT" in env) is allowed
    assert ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM" in env) is allowed


def test_mpiexec_is_the_one_beside_this_python(monkeypatch):
    monkeypatch.delenv("MPIEXEC", raising=False)
    helper.mpiexec.cache_clear()
    try:
        beside = Path(sys.executable).parent / "mpiexec"
        if beside.exists():
            assert helper.mpiexec() == (str(beside),)
        monkeypatch.setenv("MPIEXEC", "/opt/mpi/bin/mpiexec --mca btl self")
        helper.mpiexec.cache_clear()
        assert helper.mpiexec() == ("/opt/mpi/bin/mpiexec", "--mca", "btl", "self")
    finally:
        monkeypatch.undo()
        helper.mpiexec.cache_clear()


def test_mpiexec_argv():
    argv = helper.mpiexec_argv(3, ["-m", "ringmpi.ring"], ["--bind-to", "none"])
    assert argv[0] == helper.mpiexec()[0]
    tail = argv[argv.index("-n") :]
    assert tail == ["-n", "3", sys.executable, "-m", "ringmpi.ring"]
    assert argv[argv.index("-n") - 2 : argv.index("-n")] == ["--bind-to", "none"]
    assert ("--oversubscribe" in argv) is helper.is_open_mpi()
