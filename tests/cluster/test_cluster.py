"""The ring and the fib farm across docker containers, and a node lost mid-run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO

import pytest
from trace_check import check_chrome_trace

from ringmpi.fib import fib_exact

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1800)]

HELD = Path(__file__).resolve().parents[1] / "programs" / "held_fibfarm.py"
BIG = Path(__file__).resolve().parents[1] / "programs" / "big_farm.py"
#: GiB of available memory the 3 GiB result needs (tests/test_farm_big.py):
#: the nodes are containers of this machine, so it is this machine's memory.
BIG_NEEDS_GIB = 11

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
    assert results == {n: fib_exact(n) for n in range(25, 31)}
    assert re.search(r"^done: 6 of 6 results", done.stdout, re.MULTILINE)
    where = placement(done.stderr)
    assert sorted(where) == list(range(size))
    assert len(set(where.values())) == cluster.workers + 1, where
    rows = WORKER_ROW_RE.findall(done.stdout)
    assert sum(int(tasks) for _, _, tasks in rows) == 6
    for rank, host, _ in rows:
        assert where[int(rank)] == host


def test_trace_and_timeline_across_hosts(cluster) -> None:
    size = 2 * (cluster.workers + 1)
    where = f"/cluster/trace-{uuid.uuid4().hex}"
    made = cluster.exec("head", "install", "-d", "-o", "mpi", "-g", "mpi", where, user="root")
    assert made.returncode == 0, made.stderr
    try:
        done = cluster.run(
            *["-n", str(size), "python", "-m", "ringmpi.fibfarm", "30-25", "--json"],
            *["--trace", f"{where}/run.json", "--timeline", f"{where}/run.png"],
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        elapsed = json.loads(done.stdout)["elapsed"]
        shown = cluster.exec("head", "cat", f"{where}/run.json")
        assert shown.returncode == 0, shown.stderr
        trace = json.loads(shown.stdout)
        check_chrome_trace(trace, 6, size, elapsed)
        # Each row names its rank's host, as the launcher placed it.
        rows = {
            e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"
        }
        hosts = placement(done.stderr)
        assert all(rows[r].split()[1].startswith(f"{r}@{hosts[r]}") for r in rows), rows
        assert len({hosts[e["tid"]] for e in trace["traceEvents"] if e["ph"] == "X"}) >= 2
        png = cluster.exec(
            "head", "python", "-c",
            "import sys; data = open(sys.argv[1], 'rb').read(); "
            "print(data[:8] == b'\\x89PNG\\r\\n\\x1a\\n', len(data))",
            f"{where}/run.png",
        )  # fmt: skip
        assert png.returncode == 0, png.stderr
        is_png, size = png.stdout.split()
        assert is_png == "True" and int(size) > 10_000, png.stdout
    finally:
        cluster.exec("head", "rm", "-rf", where, user="root")


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


class Hold:
    """A hold directory of ``held_fibfarm.py`` on the cluster's shared volume.

    The program is copied there too (the image holds the package, not the
    tests). Its tasks write a marker when they start and wait for
    ``release``, so a node killed while one of its ranks holds a task is
    killed mid-run on a machine of any speed.
    """

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.directory = f"/cluster/hold-{uuid.uuid4().hex}"
        self.program = f"{self.directory}/held_fibfarm.py"
        self.exec("install", "-d", "-o", "mpi", "-g", "mpi", self.directory)
        self.exec("sh", "-c", f"cat > {self.program}", user="mpi", stdin=HELD.read_text())

    def exec(self, *argv: str, user: str = "root", stdin: str | None = None) -> str:
        done = subprocess.run(
            ["docker", "exec", "-i", "-u", user, self.cluster.container("head"), *argv],
            input=stdin or "",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{argv} on the head failed: {done.stderr}"
        return done.stdout

    def argv(self, *fibfarm_args: str) -> list[str]:
        """Return ``python held_fibfarm.py DIR ARGS`` for mpiexec."""
        return ["python", self.program, self.directory, *fibfarm_args]

    def holding(self, ranks: set[int]) -> bool:
        """Return whether one of ``ranks`` has started a task (and holds it)."""
        names = self.exec("ls", self.directory).split()
        return any(
            name.split("-")[1] == str(r)
            for name in names
            if name.startswith("started-")
            for r in ranks
        )

    def release(self) -> None:
        self.exec("touch", f"{self.directory}/release", user="mpi")

    def remove(self) -> None:
        self.exec("rm", "-rf", self.directory)


def kill_node_mid_run(cluster, victim: str, hold: Hold, proc, err) -> tuple[int, float]:
    """Kill ``victim``'s container while one of its ranks holds a task; then
    release the tasks; return (status, seconds from the kill to the end).

    The victim is brought back afterwards, for any later test.
    """

    def kill() -> None:
        subprocess.run(
            ["docker", "kill", cluster.container(victim)],
            capture_output=True,
            timeout=60,
            check=True,
        )

    return fault_mid_run(cluster, victim, hold, proc, err, kill)


def fault_mid_run(cluster, victim: str, hold: Hold, proc, err, fault) -> tuple[int, float]:
    """Call ``fault()`` while one of ``victim``'s ranks holds a task; then
    release the tasks; return (status, seconds from the fault to the end).

    The victim is brought back afterwards (a new container), for any later test.
    """
    try:
        deadline = time.monotonic() + 60
        while f"# {victim}: rank" not in read(err):
            assert proc.poll() is None, "the run ended before the kill:\n" + read(err)
            assert time.monotonic() < deadline, "the run never started on " + victim
            time.sleep(0.2)
        on_victim = {r for r, host in placement(read(err)).items() if host == victim}
        while not hold.holding(on_victim):
            assert proc.poll() is None, "the run ended before the kill:\n" + read(err)
            assert time.monotonic() < deadline, f"no rank on {victim} started a task"
            time.sleep(0.2)
        fault()
        struck = time.monotonic()
        hold.release()
        rc = proc.wait(timeout=120)
        return rc, time.monotonic() - struck
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        hold.release()
        hold.remove()


def test_worker_killed_mid_run(cluster) -> None:
    """A lost node ends the job fast, named in the error, with no success line."""
    victim = f"worker{cluster.workers}"
    size = 2 * (cluster.workers + 1)
    hold = Hold(cluster)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = cluster.popen(
            "-n",
            str(size),
            *hold.argv(*["28"] * 10),
            timeout=120,
            stdout=out,
            stderr=err,
        )
        try:
            rc, took = kill_node_mid_run(cluster, victim, hold, proc, err)
        finally:
            cluster.up()
        stdout, stderr = read(out), read(err)
    assert took < 30, f"the job took {took:.1f} s to end after the kill"
    assert not re.search(r"^done:", stdout, re.MULTILINE), stdout
    assert rc != 0, "the launcher must not report success after losing a node"
    assert re.search(rf"lost .*{victim}|{victim}.*lost", stderr, re.DOTALL), stderr
    assert f"lost node during the run: {victim}" in stderr, stderr


def test_worker_killed_mid_run_fault_tolerant(cluster) -> None:
    """With ULFM, a lost node either is survived or ends the job fast and named.

    Open MPI is run with --with-ft ulfm (passed through to mpiexec after --).
    Seen here, 2026-11-25, Open MPI 5 from PyPI, head + 2 workers on one
    loaded 2-core machine, 6 ranks, the worker1 container killed 3 to 4 s
    after its ranks started: the job ended, never survived, in 16 of 16 runs
    (12 through this test, 4 by hand), 0.3 to 0.6 s after the kill (4 runs)
    or 9.9 to 10.3 s after it (12 runs, the keep-alive timeout), exit status 1
    or 255, no result and no "done:" line. As open-mpi/ompi#12227 says, a
    killed daemon ends the job even with ULFM: PRTE reports "lost
    communication with a remote daemon ... on node worker1" or, worded
    oddly, "A daemon failed to report back after being spawned ... Remote
    host: worker1", and the launcher "lost node during the run: worker1".
    Sometimes the farm saw the loss first ("lost worker rank 2@worker1;
    requeued tasks [1]") before the job was ended; once the kill came while
    the ranks were still starting (MPI_ERR_PROC_FAILED in the farm's first
    gather, a traceback and an abort). Killing only a rank process, its
    daemon alive, was survived (by hand, once): status 0, "lost worker rank
    2@worker1", every result and "done:".

    Either way a "done:" line comes only with every result right, a run never
    ends with status 0 without it, and the job ends within 30 s of the kill.
    The launcher checks after the run that every node that ran ranks still
    answers, so even a run the farm got through ends with status 1 and "lost
    node during the run" when the node is gone; the farm's output then tells
    that the work was done.
    """
    # worker1: test_worker_killed_mid_run kills the last worker, so the two
    # tests lose different nodes. (A restarted node once failed to start
    # Open MPI's daemon over a stale /tmp/prted.<pid>; /tmp is a tmpfs now.)
    victim = "worker1"
    size = 2 * (cluster.workers + 1)
    # Held tasks: the kill lands mid-run however fast the machine is.
    tasks = [28] * 4 + [27] * 4
    hold = Hold(cluster)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = cluster.popen(
            "-n",
            str(size),
            "--with-ft",
            "ulfm",
            *hold.argv("--fault-tolerant", "--verify", *[str(n) for n in tasks]),
            timeout=120,
            stdout=out,
            stderr=err,
        )
        try:
            rc, took = kill_node_mid_run(cluster, victim, hold, proc, err)
        finally:
            cluster.up()
        stdout, stderr = read(out), read(err)
    assert took < 30, f"the job took {took:.1f} s to end after the kill"
    done = re.search(r"^done: (\d+) of (\d+) results", stdout, re.MULTILINE)
    print(  # seen with pytest -s
        f"fault tolerant, {victim} killed: {'survived' if done else 'job ended'} "
        f"{took:.1f} s after the kill, status {rc}"
    )
    if done:
        # Survived: every result is there and right, and the loss is reported.
        results = re.findall(r"^fib\((\d+)\) = (\d+)$", stdout, re.MULTILINE)
        assert [(int(n), int(v)) for n, v in results] == [(n, fib_exact(n)) for n in tasks], stdout
        assert done.groups() == (str(len(tasks)), str(len(tasks))), stdout
        assert f"verified {len(tasks)} results against exact Fibonacci" in stdout, stdout
        lost = re.findall(rf"^lost worker rank (\d+)@{victim};", stdout, re.MULTILINE)
        on_victim = {r for r, host in placement(stderr).items() if host == victim}
        assert lost and {int(r) for r in lost} <= on_victim, stdout
        # The launcher fails a run whose node is gone afterwards, even if the
        # farm got over the loss; it then says so.
        assert rc == 0 or f"lost node during the run: {victim}" in stderr, f"status {rc}\n{stderr}"
    else:
        # Ended: not successfully, with the lost node named.
        assert rc != 0, f"status 0 without a done: line\n{stdout}\n{stderr}"
        assert re.search(rf"lost .*{victim}|{victim}.*lost", stderr, re.DOTALL), stderr
        assert f"lost node during the run: {victim}" in stderr, stderr


def journal_rows(hold: Hold, journal: str) -> set[tuple[int, int, int]]:
    """Return the journal's attempts as {(index, attempt, ok)}, read on the head."""
    query = (
        "import sqlite3, sys; db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True); "
        "print('\\n'.join(f'{i} {a} {ok}' for i, a, ok in "
        "db.execute('SELECT idx, attempt, ok FROM attempts')))"
    )
    out = hold.exec("python", "-c", query, journal, user="mpi")
    return {(int(i), int(a), int(ok)) for i, a, ok in (line.split() for line in out.splitlines())}


STATUS_RE = re.compile(
    r"^done (\d+), failed (\d+), missing (\d+) of \d+ tasks \((\d+) attempts", re.MULTILINE
)


def journal_status(cluster, journal: str) -> tuple[int, int, int, int] | None:
    """Return (done, failed, missing, attempts) from ``fibfarm --status`` (no
    MPI) on the head, or None while there is no journal to read."""
    shown = cluster.exec(
        "head", "python", "-m", "ringmpi.fibfarm", "--journal", journal, "--status"
    )
    match = STATUS_RE.search(shown.stdout)
    if shown.returncode != 0 or not match:
        return None
    done, failed, missing, attempts = map(int, match.groups())
    return done, failed, missing, attempts


def test_worker_killed_mid_run_then_resumed(cluster) -> None:
    """A node killed mid-run (fatal even under ULFM, open-mpi/ompi#12227) ends
    the job non-zero with no done: line, the journal keeping every result that
    reached the root; a rerun with --resume on the nodes left computes only
    the missing tasks, and every result is right (--verify)."""
    victim = f"worker{cluster.workers}"
    tasks = [22] * 12
    size = 2 * (cluster.workers + 1)
    hold = Hold(cluster)
    # The journal outlives the first hold directory (removed after the kill).
    kept = f"/cluster/journal-{uuid.uuid4().hex}"
    hold.exec("install", "-d", "-o", "mpi", "-g", "mpi", kept)
    journal = f"{kept}/run.db"
    args = ["--journal", journal, *[str(n) for n in tasks]]

    def kill_once_results_are_in() -> None:
        # Only the victim's tasks are held: wait until the others' results are
        # in the journal, so the kill finds finished work to keep.
        deadline = time.monotonic() + 60
        while not (journal_status(cluster, journal) or (0,))[0]:
            assert time.monotonic() < deadline, "no result reached the journal"
            time.sleep(0.2)
        subprocess.run(
            ["docker", "kill", cluster.container(victim)],
            capture_output=True,
            timeout=60,
            check=True,
        )

    try:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = cluster.popen(
                "-n",
                str(size),
                *hold.argv("--hold-on", victim, *args),
                timeout=120,
                stdout=out,
                stderr=err,
            )
            rc, took = fault_mid_run(cluster, victim, hold, proc, err, kill_once_results_are_in)
            stdout, stderr = read(out), read(err)
        assert took < 30, f"the job took {took:.1f} s to end after the kill"
        assert rc != 0, f"status 0 after losing a node\n{stderr}"
        assert not re.search(r"^done:", stdout, re.MULTILINE), stdout
        assert f"lost node during the run: {victim}" in stderr, stderr
        # What the journal kept: results only, each once, some but not all.
        before = journal_rows(hold, journal)
        kept_ok = {i for i, _, ok in before if ok}
        assert all(ok for _, _, ok in before), before
        assert len(kept_ok) == len(before), before
        assert 0 < len(kept_ok) < len(tasks), before
        missing = set(range(len(tasks))) - kept_ok
        assert journal_status(cluster, journal) == (len(kept_ok), 0, len(missing), len(before))

        # The rerun: the victim is down, so the launcher leaves it out.
        rerun = Hold(cluster)
        rerun.release()  # nothing is held this time
        try:
            done = cluster.run(
                *["-n", str(size - 2), *rerun.argv(*args, "--resume", "--verify")],
                timeout=180,
            )
        finally:
            rerun.remove()
        assert done.returncode == 0, done.stdout + done.stderr
        where = placement(done.stderr)
        assert sorted(where) == list(range(size - 2)), done.stderr
        assert victim not in where.values(), where
        assert f"leaving out {victim}" in done.stderr, done.stderr
        results = re.findall(r"^fib\((\d+)\) = (\d+)$", done.stdout, re.MULTILINE)
        assert [(int(n), int(v)) for n, v in results] == [(n, fib_exact(n)) for n in tasks]
        assert f"verified {len(tasks)} results against exact Fibonacci" in done.stdout
        assert re.search(rf"^done: {len(tasks)} of {len(tasks)} results", done.stdout, re.M)
        # Computed in the rerun: exactly the missing tasks, each once.
        after = journal_rows(hold, journal)
        assert before <= after, (before, after)
        new = after - before
        assert sorted(i for i, _, _ in new) == sorted(missing), (missing, new)
        assert all(ok for _, _, ok in new), new
        assert journal_status(cluster, journal) == (len(tasks), 0, 0, len(before) + len(missing))
        print(  # seen with pytest -s
            f"{victim} killed: job ended {took:.1f} s later, status {rc}, "
            f"{len(kept_ok)} of {len(tasks)} results kept; the rerun on "
            f"{sorted(set(where.values()))} computed {len(new)}"
        )
    finally:
        hold.exec("rm", "-rf", kept)
        cluster.up()


#: A partitioned node ends the run within this many seconds (docker/README.md,
#: "Failure detection": Open MPI's keep-alive notices it after about 11 s,
#: else the launcher's probes after 15 s of silence, then at most 5 s to kill
#: mpiexec and 5 s for the final check).
PARTITION_BOUND = 35
#: ... and nothing of the job runs on any node this long after the run ended
#: (the lost node's prted sees its lifeline gone by its keep-alive probes and
#: ends its ranks; its sshd drops the dead session once 3 keep-alives, 3 s
#: apart, are unanswered: seen here 15 to 40 s after the end with 5 s apart).
LEFTOVER_BOUND = 60
#: The processes of an idle node: tini, sshd's listener or the head's sleep,
#: and what docker exec itself runs.
IDLE_RE = re.compile(r"/usr/bin/tini |sshd: /usr/sbin/sshd |^root +sleep infinity$|ps -eo|runc")


def leftovers(cluster, service: str) -> list[str]:
    """Return the processes on ``service``'s node besides those of an idle node."""
    ps = cluster.exec(service, "ps", "-eo", "user=,args=", user="root")
    assert ps.returncode == 0, ps.stderr
    return [line for line in ps.stdout.splitlines() if line.strip() and not IDLE_RE.search(line)]


def network_of(container: str) -> str:
    return subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
            container,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


@pytest.mark.parametrize(
    "node_timeout",
    [
        pytest.param(None, id="default"),
        # Far shorter than Open MPI's keep-alive timeout (about 11 s): the
        # launcher's own probes end the run (one failed probe, 3 s), as when
        # mpiexec hangs.
        pytest.param(2, id="launcher-probes"),
    ],
)
def test_worker_partitioned_mid_run(cluster, node_timeout: int | None) -> None:
    """A worker cut off the cluster network mid-run (docker network
    disconnect) ends the job within PARTITION_BOUND s, non-zero, the node
    named, no done: line; LEFTOVER_BOUND s later no node runs anything of it."""
    victim = f"worker{cluster.workers}"
    services = ["head"] + [f"worker{i}" for i in range(1, cluster.workers + 1)]
    for service in services:
        assert leftovers(cluster, service) == [], f"{service} is not idle before the run"
    size = 2 * (cluster.workers + 1)
    hold = Hold(cluster)
    container = cluster.container(victim)
    network = network_of(container)
    if node_timeout is not None:
        cluster.env["RINGMPI_NODE_TIMEOUT"] = str(node_timeout)

    def partition() -> None:
        subprocess.run(
            ["docker", "network", "disconnect", "--force", network, container],
            capture_output=True,
            timeout=60,
            check=True,
        )

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = cluster.popen(
                "-n", str(size), *hold.argv(*["28"] * 10), timeout=300, stdout=out, stderr=err
            )
            rc, took = fault_mid_run(cluster, victim, hold, proc, err, partition)
            ended = time.monotonic()
            stdout, stderr = read(out), read(err)
            left = {s: leftovers(cluster, s) for s in services}
            while any(left.values()) and time.monotonic() - ended < LEFTOVER_BOUND:
                time.sleep(1)
                left = {s: leftovers(cluster, s) for s in services}
            cleared = time.monotonic() - ended
        finally:
            cluster.env.pop("RINGMPI_NODE_TIMEOUT", None)
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=60)
            cluster.up()
    print(  # seen with pytest -s
        f"partition of {victim} (node timeout {node_timeout or 'default'}): job ended "
        f"{took:.1f} s after it, status {rc}; nodes idle {cleared:.1f} s after the end"
    )
    assert took < PARTITION_BOUND, f"the job took {took:.1f} s to end after the partition"
    assert rc != 0, f"status 0 after losing a node\n{stderr}"
    assert rc != 124, f"only the run's --timeout ended it\n{stderr}"
    assert not re.search(r"^done:", stdout, re.MULTILINE), stdout
    assert f"lost node during the run: {victim}" in stderr, stderr
    if node_timeout is not None:
        assert f"{victim} not answering for {node_timeout} s: ending the run" in stderr, stderr
    assert not any(left.values()), f"left running after {LEFTOVER_BOUND} s: {left}"


def test_cluster_of_any_size_with_own_cores(cluster) -> None:
    """up --workers N --cores-per-node 1: N workers beyond the default, each
    named workerK, each node with one CPU of its own (nproc, slots, the farm)."""
    workers = cluster.workers + 1
    try:
        cluster.up(workers=workers, extra=["--cores-per-node", "1"])
        services = ["head"] + [f"worker{i}" for i in range(1, workers + 1)]
        host_cpus = int(
            subprocess.run(
                ["docker", "info", "--format", "{{.NCPU}}"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        )
        for i, service in enumerate(services):
            cpuset = subprocess.run(
                [
                    "docker",
                    "inspect",
                    "-f",
                    "{{.HostConfig.CpusetCpus}}",
                    cluster.container(service),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.strip()
            assert cpuset == str(i % host_cpus), f"{service}: cpuset {cpuset!r}"
            assert cluster.exec(service, "hostname").stdout.strip() == service
            assert cluster.exec(service, "nproc").stdout.strip() == "1"
        size = 2 * len(services)
        done = cluster.run("-n", str(size), "python", "-m", "ringmpi.fibfarm", "30-25", timeout=180)
        assert done.returncode == 0, done.stderr
        expected = ", ".join(f"{s} slots=1" for s in services)
        assert f"# hostfile: {expected}" in done.stderr, done.stderr
        where = placement(done.stderr)
        assert set(where.values()) == set(services), where
        # one core per node: the farm computes on one rank per node
        assert f"{len(services)} computing" in done.stdout, done.stdout
        hosts = [host for _, host, tasks in WORKER_ROW_RE.findall(done.stdout) if int(tasks)]
        assert len(hosts) == len(set(hosts)), done.stdout
        assert re.search(r"^done: 6 of 6 results", done.stdout, re.MULTILINE)
    finally:
        cluster.up()  # back to the default size, every node seeing all CPUs
    assert cluster.container(f"worker{cluster.workers}")
    gone = subprocess.run(
        [
            "docker",
            "ps",
            "-aq",
            "--filter",
            f"label=com.docker.compose.project={cluster.project}",
            "--filter",
            f"label=com.docker.compose.service=worker{workers}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert gone == "", f"worker{workers} still exists after up --workers {cluster.workers}"
    assert cluster.exec("head", "nproc").stdout.strip() == str(host_cpus)


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


def available_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / (1 << 20)
    return 0.0


@pytest.mark.skipif(
    os.environ.get("RINGMPI_TEST_BIG") != "1", reason="set RINGMPI_TEST_BIG=1 (about 10 GiB)"
)
def test_result_of_3_gib_across_hosts(cluster) -> None:
    """A task on a worker node returns a 3 GiB bytes object to the root on
    the head, across the container network; it comes back exactly (CRC-32)."""
    if available_gib() < BIG_NEEDS_GIB:
        pytest.skip(f"needs {BIG_NEEDS_GIB} GiB of available memory, {available_gib():.1f} here")
    where = f"/cluster/big-{uuid.uuid4().hex}"
    made = cluster.exec("head", "install", "-d", "-o", "mpi", "-g", "mpi", where, user="root")
    assert made.returncode == 0, made.stderr
    copy = f"cat > {where}/big_farm.py"
    try:
        copied = subprocess.run(
            ["docker", "exec", "-i", "-u", "mpi", cluster.container("head"), "sh", "-c", copy],
            input=BIG.read_text(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert copied.returncode == 0, copied.stderr
        # One rank per node: rank 0 (the root, computing nothing) on the
        # head, rank 1 (the only worker) on another node.
        done = cluster.run(
            *["-n", "2", "--map-by", "node", "python", f"{where}/big_farm.py", "bytes", "dynamic"],
            timeout=600,
        )
    finally:
        cluster.exec("head", "rm", "-rf", where, user="root")
    assert done.returncode == 0, done.stdout + done.stderr
    hosts = placement(done.stderr)
    assert hosts[0] == "head" and hosts[1] != "head", hosts
    nbytes = 3 * (1 << 30) + 13
    match = re.search(r"^ok: bytes (\d+) ([0-9a-f]{8})$", done.stdout, re.MULTILINE)
    assert match and int(match.group(1)) == nbytes, done.stdout
    print(done.stdout)  # seen with pytest -s: the time and the peak RSS of each rank
