"""The ring and the fib farm across docker containers, and a node lost mid-run."""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from typing import IO

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1800)]

FIB = {25: 75025, 26: 121393, 27: 196418, 28: 317811, 29: 514229, 30: 832040}
#: "# worker1: ranks 2 3", printed by the launcher for every run
PLACEMENT_RE = re.compile(r"^# (\S+): ranks? ([\d ]+)$", re.MULTILINE)
WORKER_ROW_RE = re.compile(r"^\s+(\d+)\s+(\S+)\s+(\d+)\s+[\d.]+$", re.MULTILINE)


def read(file: IO[str]) -> str:
    file.seek(0)
    return file.read()


def placement(stderr: str) -> dict[int, str]:
    """Return {rank: host} from the launcher's placement lines."""
    return {int(r): host for host, ranks in PLACEMENT_RE.findall(stderr) for r in ranks.split()}


@pytest.mark.parametrize("size", [3, 6])
def test_ring_across_hosts(cluster, size: int) -> None:
    done = cluster.run("-n", str(size), "python", "-m", "ringmpi.ring", timeout=120)
    assert done.returncode == 0, done.stderr
    ranks = re.findall(r"^I am rank (\d+) of (\d+) on node (\S+)$", done.stdout, re.MULTILINE)
    assert [int(r) for r, _, _ in ranks] == list(range(size))
    assert {int(n) for _, n, _ in ranks} == {size}
    hosts = {host for _, _, host in ranks}
    assert len(hosts) >= 2, f"all ranks ran on {hosts}"
    assert hosts == set(placement(done.stderr).values())
    message = "".join(f"P{r}" for r in range(size))
    assert f'Processor 0 received message "{message}" from rank {size - 1}' in done.stdout


def test_fibfarm_across_hosts(cluster) -> None:
    size = 2 * (cluster.workers + 1)
    done = cluster.run("-n", str(size), "python", "-m", "ringmpi.fibfarm", "30-25", timeout=180)
    assert done.returncode == 0, done.stderr
    results = {
        int(n): int(v) for n, v in re.findall(r"^fib\((\d+)\) = (\d+)$", done.stdout, re.MULTILINE)
    }
    assert results == {n: FIB[n] for n in range(25, 31)}
    assert re.search(r"^done: 6 of 6 results", done.stdout, re.MULTILINE)
    where = placement(done.stderr)
    assert sorted(where) == list(range(size))
    assert len(set(where.values())) == cluster.workers + 1, where
    rows = WORKER_ROW_RE.findall(done.stdout)
    assert sum(int(tasks) for _, _, tasks in rows) == 6
    for rank, host, _ in rows:
        assert where[int(rank)] == host


def test_ranks_run_as_non_root(cluster) -> None:
    done = cluster.run("-n", str(cluster.workers + 1), "--map-by", "node", "id", "-un", timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["mpi"] * (cluster.workers + 1)
    assert len(set(placement(done.stderr).values())) == cluster.workers + 1


def test_no_port_reaches_the_host(cluster) -> None:
    for service in ["head"] + [f"worker{i}" for i in range(1, cluster.workers + 1)]:
        ports = subprocess.run(
            ["docker", "port", cluster.container(service)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert ports.stdout.strip() == "", f"{service} publishes {ports.stdout}"


def test_worker_killed_mid_run(cluster) -> None:
    """A lost node ends the job fast, named in the error, with no success line."""
    victim = f"worker{cluster.workers}"
    size = 2 * (cluster.workers + 1)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = cluster.popen(
            "-n",
            str(size),
            "python",
            "-m",
            "ringmpi.fibfarm",
            *["35"] * 10,
            timeout=120,
            stdout=out,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + 60
            while f"# {victim}: rank" not in read(err):
                assert proc.poll() is None, "the run ended before the kill"
                assert time.monotonic() < deadline, "the run never started on " + victim
                time.sleep(0.2)
            time.sleep(4)  # ranks up and computing
            assert proc.poll() is None, "the run ended before the kill"
            subprocess.run(
                ["docker", "kill", cluster.container(victim)],
                capture_output=True,
                timeout=60,
                check=True,
            )
            killed = time.monotonic()
            rc = proc.wait(timeout=60)
            took = time.monotonic() - killed
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            cluster.up()  # bring the victim back for any later test
        stdout, stderr = read(out), read(err)
    assert took < 30, f"the job took {took:.1f} s to end after the kill"
    assert not re.search(r"^done:", stdout, re.MULTILINE), stdout
    assert rc != 0, "the launcher must not report success after losing a node"
    assert re.search(rf"lost .*{victim}|{victim}.*lost", stderr, re.DOTALL), stderr
    assert f"lost node during the run: {victim}" in stderr, stderr


def test_image_holds_no_keys(cluster) -> None:
    """Host and user keys are made when a node starts, never baked in."""
    listing = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "sh",
            cluster.image,
            "-c",
            "ls /etc/ssh/ssh_host_* /home/mpi/.ssh 2>/dev/null; true",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert listing.stdout.strip() == ""
