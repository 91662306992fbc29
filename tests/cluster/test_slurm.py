"""Slurm in the container cluster: sbatch and srun run both programs; failures."""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO

import pytest

from ringmpi.fib import fib_exact

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
FIBFARM = str(ROOT / "docker" / "slurm" / "fibfarm.sbatch")
#: "# job 7: COMPLETED, exit code 0:0, nodes worker[1-3], elapsed 00:00:19"
STATE_RE = re.compile(r"^# job (\d+): (\S+), exit code (\S+), nodes ([^,\s]+)", re.MULTILINE)
SUBMITTED_RE = re.compile(r"^# job (\d+) submitted$", re.MULTILINE)
#: a row of the farm's table: rank, host, tasks, busy seconds
WORKER_ROW_RE = re.compile(r"^\s+(\d+)\s+(\S+)\s+(\d+)\s+[\d.]+$", re.MULTILINE)
RESULT_RE = re.compile(r"^fib\((\d+)\) = (\d+)$", re.MULTILINE)


def read(file: IO[str]) -> str:
    file.seek(0)
    return file.read()


def results(stdout: str) -> list[tuple[int, int]]:
    return [(int(n), int(v)) for n, v in RESULT_RE.findall(stdout)]


def job_state(stderr: str) -> tuple[str, str]:
    """Return (state, node list) from scripts/cluster sbatch's closing line."""
    match = STATE_RE.search(stderr)
    assert match, f"no job state line:\n{stderr}"
    return match.group(2), match.group(4)


def sbatch(cluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return cluster.cluster("sbatch", *args, timeout=timeout)


def test_sbatch_fibfarm_on_three_hosts(slurm_cluster) -> None:
    """mpiexec reads the allocation: 6 ranks on 3 nodes, no hostfile, no -n."""
    started = time.monotonic()
    done = sbatch(slurm_cluster, FIBFARM)
    print(f"sbatch fibfarm: {time.monotonic() - started:.1f} s")  # seen with pytest -s
    assert done.returncode == 0, done.stdout + done.stderr
    assert results(done.stdout) == [(n, fib_exact(n)) for n in range(38, 32, -1)], done.stdout
    assert "verified 6 results against exact Fibonacci" in done.stdout
    assert re.search(r"^done: 6 of 6 results", done.stdout, re.MULTILINE), done.stdout
    assert "# 6 tasks on 6 ranks" in done.stdout
    hosts = {host for _, host, _ in WORKER_ROW_RE.findall(done.stdout)}
    assert hosts == {"worker1", "worker2", "worker3"}, done.stdout
    assert job_state(done.stderr) == ("COMPLETED", "worker[1-3]"), done.stderr


def test_srun_pmix_ring(slurm_cluster) -> None:
    """srun --mpi=pmix serves the wheel's Open MPI directly, without boxes."""
    done = slurm_cluster.cluster(
        "srun", "--timeout", "120", "--", "--mpi=pmix", "-n", "6", "python", "-m", "ringmpi.ring"
    )
    assert done.returncode == 0, done.stderr
    ranks = re.findall(r"^I am rank (\d+) of (\d+) on node (\S+)$", done.stdout, re.MULTILINE)
    assert sorted(int(r) for r, _, _ in ranks) == list(range(6)), done.stdout
    assert {int(n) for _, n, _ in ranks} == {6}
    hosts = {host for _, _, host in ranks}
    assert len(hosts) >= 2 and hosts <= {"worker1", "worker2", "worker3"}, hosts
    assert 'Processor 0 received message "P0P1P2P3P4P5" from rank 5' in done.stdout
    # PMIx's "find-available:not-valid" boxes are silenced (docker/slurm/node.sh)
    assert "Sorry!" not in done.stderr, done.stderr


def test_srun_without_mpi_names_the_fix(slurm_cluster) -> None:
    """srun without --mpi: one error line naming --mpi=pmix, and a failure."""
    done = slurm_cluster.cluster(
        "srun", "--timeout", "120", "--", "-n", "4", "python", "-m", "ringmpi.ring"
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: the launcher started 4 processes (SLURM_STEP_NUM_TASKS=4)")
    assert "srun --mpi=pmix" in errors[0]
    assert "I am rank" not in done.stdout


def test_ranks_run_as_non_root(slurm_cluster) -> None:
    done = slurm_cluster.cluster(
        "srun",
        "--timeout",
        "60",
        "--",
        "-N",
        "3",
        "-n",
        "3",
        "sh",
        "-c",
        "echo $(id -un)@$(hostname)",
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == ["mpi@worker1", "mpi@worker2", "mpi@worker3"]


def test_no_port_reaches_the_host(slurm_cluster) -> None:
    for service in ["head"] + [f"worker{i}" for i in range(1, slurm_cluster.workers + 1)]:
        ports = subprocess.run(
            ["docker", "port", slurm_cluster.container(service)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert ports.stdout.strip() == "", f"{service} publishes {ports.stdout}"


#: private keys of any kind (ssh, TLS, PGP) in PEM or OpenSSH form
PRIVATE_KEY = "PRIVATE KEY"


def test_no_key_in_the_image(slurm_cluster) -> None:
    """No munge key, ssh key, database or private key file is baked into the image."""
    listing = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "sh",
            slurm_cluster.image,
            "-c",
            "ls -d /etc/munge/*.key /etc/ssh/ssh_host_* /home/mpi/.ssh /root/.ssh "
            "/var/lib/mysql/* /cluster/* 2>/dev/null; "
            f"grep -rlI -e '{PRIVATE_KEY}' /etc /home /root /opt /var /usr/local 2>/dev/null; true",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert listing.stdout.strip() == ""


def test_munge_key_is_made_per_cluster(slurm_cluster) -> None:
    """The running cluster's key exists, readable only by munge, same on every node."""
    sums = set()
    for service in ["head", "worker1", "worker2", "worker3"]:
        done = slurm_cluster.exec(
            service, "stat", "-c", "%U %a", "/etc/munge/munge.key", user="root"
        )
        assert done.stdout.split() == ["munge", "400"], done.stdout + done.stderr
        sums.add(slurm_cluster.exec(service, "md5sum", "/etc/munge/munge.key", user="root").stdout)
        assert slurm_cluster.exec(service, "cat", "/etc/munge/munge.key").returncode != 0
    assert len(sums) == 1, sums


def test_no_key_in_git() -> None:
    """No file that git tracks holds a key."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    names = tracked.stdout.split()
    keyish = [n for n in names if re.search(r"\.(key|pem|p12|pfx)$|(^|/)id_(rsa|ed25519)", n)]
    assert keyish == []
    holding = subprocess.run(
        ["git", "grep", "-l", "-I", "-e", f"BEGIN [A-Z ]*{PRIVATE_KEY}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert holding.stdout.strip() == ""


def running_farm_ranks(cluster, service: str) -> int:
    """Return how many fib farm processes of user mpi run in a node now."""
    found = cluster.exec(service, "pgrep", "-u", "mpi", "-f", "ringmpi.fibfarm")
    return len(found.stdout.split())


def job_output(cluster, job: str) -> str:
    return cluster.exec("head", "cat", f"/cluster/jobs/slurm-{job}.out").stdout


def wait_mid_run(cluster, proc, err, victim: str, ranks: int) -> str:
    """Return the job id once ``ranks`` farm ranks run on ``victim`` mid-job."""
    deadline = time.monotonic() + 120
    while not SUBMITTED_RE.search(read(err)):
        assert proc.poll() is None, "sbatch ended before the job started:\n" + read(err)
        assert time.monotonic() < deadline, "the job was never submitted"
        time.sleep(0.2)
    job = SUBMITTED_RE.search(read(err)).group(1)  # type: ignore[union-attr]
    while running_farm_ranks(cluster, victim) < ranks:
        assert proc.poll() is None, "the job ended before the kill:\n" + read(err)
        assert time.monotonic() < deadline, f"the ranks never started on {victim}"
        time.sleep(0.2)
    return job


def test_node_killed_mid_job(slurm_cluster) -> None:
    """A compute node lost mid-job ends it (failed in sacct, no done: line);
    the job resubmitted on the two nodes left completes."""
    victim = "worker3"
    # 40 tasks of fib(36): about 40 s of CPU here, so the job is still
    # running seconds after its ranks start even on a machine 3x faster; the
    # test checks that it was (no done: line, sbatch still waiting).
    tasks = ["36"] * 40
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = slurm_cluster.cluster_popen("sbatch", FIBFARM, *tasks, stdout=out, stderr=err)
        try:
            job = wait_mid_run(slurm_cluster, proc, err, victim, ranks=2)
            time.sleep(2)  # MPI up and computing
            assert proc.poll() is None, "the job ended before the kill:\n" + read(err)
            assert "done:" not in job_output(slurm_cluster, job)
            subprocess.run(
                ["docker", "kill", slurm_cluster.container(victim)],
                capture_output=True,
                timeout=60,
                check=True,
            )
            killed = time.monotonic()
            rc = proc.wait(timeout=300)
            took = time.monotonic() - killed
            stdout, stderr = read(out), read(err)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"node killed: sbatch returned {took:.1f} s after the kill, status {rc}")
    state, nodes = job_state(stderr)
    assert state in {"FAILED", "NODE_FAIL"}, stderr
    assert nodes == "worker[1-3]"
    assert rc != 0
    assert not re.search(r"^done:", stdout, re.MULTILINE), stdout
    try:
        # Slurm marks the silent node down (SlurmdTimeout=20) ...
        deadline = time.monotonic() + 120
        while (
            "down" not in slurm_cluster.exec("head", "sinfo", "-h", "-n", victim, "-o", "%T").stdout
        ):
            assert time.monotonic() < deadline, "Slurm never marked the killed node down"
            time.sleep(1)
        # ... and the job resubmitted on the nodes left completes.
        started = time.monotonic()
        again = sbatch(slurm_cluster, "--nodes=2", FIBFARM, "30-25")
        print(f"resubmitted on 2 nodes: {time.monotonic() - started:.1f} s")
        assert again.returncode == 0, again.stdout + again.stderr
        assert results(again.stdout) == [(n, fib_exact(n)) for n in range(30, 24, -1)]
        assert re.search(r"^done: 6 of 6 results", again.stdout, re.MULTILINE)
        assert job_state(again.stderr) == ("COMPLETED", "worker[1-2]"), again.stderr
    finally:
        slurm_cluster.up()  # the node comes back and returns to service


def test_time_limit_ends_the_job(slurm_cluster) -> None:
    """A job past its --time gets SIGTERM, then SIGKILL: TIMEOUT, status 124, a clear line."""
    # 400 tasks of fib(38): far more than a minute of work on any machine
    # (about 1100 s of CPU here); TIMEOUT in sacct shows it was still running.
    started = time.monotonic()
    done = sbatch(slurm_cluster, "--time=1", FIBFARM, *["38"] * 400, timeout=400)
    print(f"time limit 1 min: sbatch returned after {time.monotonic() - started:.1f} s")
    assert done.returncode == 124, done.stdout + done.stderr
    assert job_state(done.stderr)[0] == "TIMEOUT", done.stderr
    assert re.search(
        r"\*\*\* JOB \d+ ON \S+ CANCELLED AT \S+ DUE TO TIME LIMIT \*\*\*", done.stdout
    )
    assert not re.search(r"^done:", done.stdout, re.MULTILINE)
    for service in ["worker1", "worker2", "worker3"]:
        assert running_farm_ranks(slurm_cluster, service) == 0, f"ranks left on {service}"


def test_time_limit_then_resume_in_a_second_sbatch(slurm_cluster) -> None:
    """Past --time the journal keeps what arrived; a second sbatch with
    --resume computes only the rest and completes."""
    where = f"/cluster/resume-{uuid.uuid4().hex}"
    made = slurm_cluster.exec("head", "install", "-d", "-o", "mpi", "-g", "mpi", where, user="root")
    assert made.returncode == 0, made.stderr
    journal = f"{where}/run.db"
    # fib(34) 2100 times: some 550 s of CPU here, so the 1-minute job cannot
    # finish on a machine several times faster; the rest then takes minutes.
    tasks = ["34"] * 2100
    farm = [FIBFARM, "--journal", journal, "--resume", "-q", *tasks]
    try:
        first = sbatch(slurm_cluster, "--time=1", *farm, timeout=400)
        assert job_state(first.stderr)[0] == "TIMEOUT", first.stderr
        assert not re.search(r"^done:", first.stdout, re.MULTILINE)
        status = slurm_cluster.exec(
            "head", "python", "-m", "ringmpi.fibfarm", "--journal", journal, "--status"
        )
        assert status.returncode == 0, status.stderr
        kept = int(
            re.search(
                r"^done (\d+), failed 0, missing (\d+) of 2100", status.stdout, re.MULTILINE
            ).group(1)
        )
        assert 0 < kept < 2100, status.stdout
        second = sbatch(slurm_cluster, "--time=20", *farm, timeout=1500)
        assert second.returncode == 0, second.stdout + second.stderr
        assert job_state(second.stderr)[0] == "COMPLETED", second.stderr
        assert len(results(second.stdout)) == 2100
        assert all(value == fib_exact(34) for _, value in results(second.stdout))
        status = slurm_cluster.exec(
            "head", "python", "-m", "ringmpi.fibfarm", "--journal", journal, "--status"
        )
        match = re.search(
            r"^done 2100, failed 0, missing 0 of 2100 tasks \((\d+) attempts\)",
            status.stdout,
            re.MULTILINE,
        )
        assert match, status.stdout
        # Journaled attempts over both jobs: every task exactly once (what was
        # in flight when the first job was stopped never arrived, and the
        # second job ran only what the journal did not hold).
        assert int(match.group(1)) == 2100, status.stdout
        print(f"time limit then resume: first job kept {kept} of 2100, attempts {match.group(1)}")
    finally:
        slurm_cluster.exec("head", "rm", "-rf", where, user="root")


def test_srun_pmix_runs_a_plain_script_across_nodes(slurm_cluster) -> None:
    """python -m ringmpi.run under srun --mpi=pmix: the script once on rank 0,
    the serial result, and the script's exit status as the step's."""
    import json

    where = f"/cluster/run-{uuid.uuid4().hex}"
    made = slurm_cluster.exec("head", "install", "-d", "-o", "mpi", "-g", "mpi", where, user="root")
    assert made.returncode == 0, made.stderr
    copied = subprocess.run(
        ["docker", "cp", str(ROOT / "tests" / "programs" / "plain_script.py"),
         f"{slurm_cluster.container('head')}:{where}/plain_script.py"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    script, out = f"{where}/plain_script.py", f"{where}/runs"
    done = slurm_cluster.cluster(
        "srun", "--timeout", "120", "--", "--mpi=pmix", "-N", "3", "-n", "4",
        "python", "-m", "ringmpi.run", script, out, "exit=3",
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout + done.stderr
    assert json.loads(lines[0]) == {
        "squares": [x * x for x in range(50)],
        "points": [x + 0.5 for x in range(10)],
    }
    runs = slurm_cluster.exec("head", "cat", out).stdout.splitlines()
    assert len(runs) == 1, runs
    imported = slurm_cluster.exec("head", "cat", out + ".imported").stdout.split()
    assert imported.count("__worker__") == 3 and imported.count("__main__") == 1
