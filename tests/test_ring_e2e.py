"""``mpiexec -n N python -m ringmpi.ring``, started for real: output, options, bad usage."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import mpirun as helper
import pytest

from ringmpi.ring import expected_message

HOST = socket.gethostname()
RING = ("-m", "ringmpi.ring")


def ring_lines(n: int) -> list[str]:
    return [
        *(f"I am rank {rank} of {n} on node {HOST}" for rank in range(n)),
        f'Processor 0 received message "{expected_message(n)}" from rank {n - 1}',
    ]


def table_rows(stdout: str) -> list[list[str]]:
    """Return the data rows of a ``#``-headed table, split into fields."""
    return [line.split() for line in stdout.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
def test_default_ring(mpirun, n):
    result = mpirun(n, *RING, timeout=60).check(0)
    assert result.stdout_lines == ring_lines(n), result.describe()
    assert result.stderr == "", result.describe()


def test_default_ring_16_ranks_oversubscribed(mpirun):
    result = mpirun(16, *RING, timeout=120).check(0)
    assert result.stdout_lines == ring_lines(16), result.describe()


def test_quiet(mpirun):
    result = mpirun(4, *RING, "-q").check(0)
    assert result.stdout == "P0P1P2P3\n", result.describe()


def test_timed_message_takes_repeat_samples(mpirun):
    result = mpirun(2, *RING, "--rounds", "200", "--repeat", "4", "--json").check(0)
    report = json.loads(result.stdout)
    assert (report["mode"], report["rounds"], report["repeat"]) == ("message", 200, 4)
    [timing] = report["timings"]
    assert len(timing["hop_us"]) == 4, timing
    assert timing["hop_us_stdev"] > 0, timing
    table = mpirun(2, *RING, "--rounds", "200", "--repeat", "3").check(0)
    assert "pickled message, 200 rounds x 3 samples" in table.stdout, table.describe()


def test_size_table(mpirun):
    result = mpirun(3, *RING, "--size", "4K", "--rounds", "50", "--repeat", "3").check(0)
    lines = result.stdout_lines
    assert lines[0] == "# ring of 3 ranks on 1 host: buffer Send/Recv, 50 rounds x 3 samples"
    assert lines[1].split()[1:4] == ["size", "[B]", "hop"]
    [row] = table_rows(result.stdout)
    size, mean, pm, _, best, bandwidth = row
    assert (size, pm) == ("4096", "±")
    assert 0 < float(best) <= float(mean)
    assert float(bandwidth) == pytest.approx(4096 / float(best), rel=0.01)


def test_sweep(mpirun):
    result = mpirun(2, *RING, "--sweep", "1:64K", "--rounds", "20", "--repeat", "2").check(0)
    sizes = [int(row[0]) for row in table_rows(result.stdout)]
    assert sizes == [1 << k for k in range(17)], result.describe()


def test_pickle_quiet(mpirun):
    result = mpirun(4, *RING, "--pickle", "--size", "1K", "--rounds", "20", "-q").check(0)
    [line] = result.stdout_lines
    assert line.split()[0] == "1024"
    assert len(line.split()) == 6


def test_json_sweep(mpirun):
    argv = ["--json", "--pickle", "--sweep", "1K:4K", "--rounds", "10", "--repeat", "2"]
    result = mpirun(4, *RING, *argv).check(0)
    report = json.loads(result.stdout)
    assert (report["program"], report["ranks"], report["hosts"]) == ("ring", 4, [HOST])
    assert (report["mode"], report["rounds"], report["repeat"]) == ("pickle", 10, 2)
    assert [t["size"] for t in report["timings"]] == [1024, 2048, 4096]
    assert all(t["hops"] == 4 and len(t["hop_us"]) == 2 for t in report["timings"])


def test_json_message(mpirun):
    result = mpirun(3, *RING, "--json").check(0)
    report = json.loads(result.stdout)
    assert (report["mode"], report["message"], report["ranks"]) == ("message", "P0P1P2", 3)


def _peak_rss_mib(argv: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``argv`` in a child that reports the peak RSS of its descendants."""
    code = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=240)\n"
        "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.stderr.write(p.stdout + p.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=helper.child_env(),
        cwd=helper.ROOT,
    )
    status, kib = done.stdout.split()
    return subprocess.CompletedProcess(argv, int(status), done.stderr, ""), int(kib) / 1024


def test_a_rank_needs_about_twice_the_message_at_most():
    argv = helper.mpiexec_argv(2, [*RING, "--size", "256M", "-r", "2", "--repeat", "1", "-q"])
    done, peak = _peak_rss_mib(argv)
    assert done.returncode == 0, done.stdout
    # Two buffers of 256 MiB on rank 0, plus the interpreter, numpy and MPI.
    assert peak < 2 * 256 + 160, f"peak RSS {peak:.0f} MiB\n{done.stdout}"


def test_messages_of_2_gib_and_more_work():
    nbytes = (1 << 31) + 101
    argv = helper.mpiexec_argv(2, [*RING, "--size", str(nbytes), "-r", "1", "--repeat", "1"])
    argv += ["--warmup", "0", "-q"]
    done, peak = _peak_rss_mib(argv)
    assert done.returncode == 0, done.stdout
    assert table_rows(done.stdout)[0][0] == str(nbytes), done.stdout
    assert peak < (2 * nbytes >> 20) + 200, f"peak RSS {peak:.0f} MiB"
