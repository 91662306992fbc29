#!/usr/bin/python3
"""Run mpiexec across the ringmpi docker cluster, from the head node."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SHARED = Path("/cluster")
MPIEXEC = "/opt/venv/bin/mpiexec"
PROG = "ringmpi-launch"

# OOB keep-alive probes, so that a silent node is declared lost after about
# 5 + 2 * 3 = 11 s instead of about 8 minutes (defaults 300/20/9).
KEEPALIVE = [
    ("--prtemca", "oob_tcp_keepalive_time", "5"),
    ("--prtemca", "oob_tcp_keepalive_intvl", "2"),
    ("--prtemca", "oob_tcp_keepalive_probes", "3"),
]
#: A node whose ssh port has not answered for this many seconds while its
#: ranks run is lost: mpiexec is killed (after a partition it may never exit).
#: Longer than the keep-alive timeout, so Open MPI normally reports first.
NODE_TIMEOUT = 15.0
#: Seconds between two probes of the nodes, and the longest a probe waits.
PROBE_INTERVAL = 2.0
PROBE_TIMEOUT = 3.0
#: Seconds between SIGTERM and SIGKILL to mpiexec's process group.
KILL_GRACE = 5.0
MCA_FLAGS = {"--mca", "-mca", "--gmca", "-gmca", "--prtemca", "--pmixmca"}


class LaunchError(Exception):
    """A failure to report as one error line."""


def natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def read_nodes(head: str) -> dict[str, int]:
    """Return {host: slots} for every node that registered on the volume."""
    nodes = {}
    for path in sorted((SHARED / "nodes").glob("*"), key=lambda p: natural_key(p.name)):
        match = re.search(r"slots=(\d+)", path.read_text())
        if match and not path.name.endswith(".tmp"):
            nodes[path.name] = int(match.group(1))
    if head not in nodes:
        raise LaunchError(f"the head {head} is not registered in {SHARED}/nodes")
    return nodes


def write_known_hosts() -> None:
    ssh_dir = Path.home() / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    parts = sorted((SHARED / "ssh" / "known_hosts.d").glob("*"))
    text = "".join(p.read_text() for p in parts if ".tmp." not in p.name)
    (ssh_dir / "known_hosts").write_text(text)


def reachable(host: str) -> bool:
    """Return True when an ssh login to host works now."""
    try:
        done = subprocess.run(
            ["ssh", host, "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def address(host: str) -> str:
    """Return host's IPv4 address, or host itself when it has none now."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def port_open(host: str, port: int = 22) -> bool:
    """Return True when host accepts a TCP connection on port within PROBE_TIMEOUT."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


class NodeWatch(threading.Thread):
    """Probe the nodes that run ranks while mpiexec runs; end the run when one
    has not answered for ``limit`` seconds.

    A partitioned node is noticed by Open MPI's keep-alive probes after about
    11 s, but mpiexec may then hang for ever; this ends it all the same.
    """

    def __init__(self, proc: subprocess.Popen[bytes], limit: float) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.limit = limit
        self.hosts: list[str] = []
        self.addresses: list[str] = []
        self.lost: list[str] = []
        #: hosts that did not answer the last probe
        self.silent: set[str] = set()
        self.done = threading.Event()

    def watch(self, hosts: Sequence[str]) -> None:
        """Start probing ``hosts`` (those that run ranks, known from the map).

        They are probed by address: Docker's DNS takes 10 s to fail for a
        container cut off its network, longer than a probe may take.
        """
        self.hosts = list(hosts)
        self.addresses = [address(h) for h in self.hosts]
        if self.hosts and self.limit > 0:
            self.start()

    def run(self) -> None:
        silent_since: dict[str, float] = {}
        with ThreadPoolExecutor(max_workers=min(32, len(self.hosts))) as pool:
            while not self.done.wait(PROBE_INTERVAL):
                now = time.monotonic()
                for host, ok in zip(self.hosts, pool.map(port_open, self.addresses)):
                    if ok:
                        silent_since.pop(host, None)
                    else:
                        silent_since.setdefault(host, now)
                self.silent = set(silent_since)
                end = time.monotonic()  # a probe that failed took PROBE_TIMEOUT
                self.lost = [h for h, t in silent_since.items() if end - t >= self.limit]
                if self.lost and not self.done.is_set():
                    print(
                        f"{PROG}: error: {', '.join(self.lost)} not answering for "
                        f"{self.limit:g} s: ending the run",
                        file=sys.stderr,
                        flush=True,
                    )
                    terminate(self.proc)
                    return

    def stop(self) -> None:
        self.done.set()


def check_hosts(hosts: Sequence[str]) -> dict[str, bool]:
    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        return dict(zip(hosts, pool.map(reachable, hosts)))


def cluster_network() -> str:
    """Return the CIDR of the cluster network (RINGMPI_NETWORK or eth0's)."""
    if os.environ.get("RINGMPI_NETWORK"):
        return os.environ["RINGMPI_NETWORK"]
    iface = os.environ.get("RINGMPI_IFACE", "eth0")
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "dev", iface],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    match = re.search(r"inet (\S+)", out)
    if not match:
        raise LaunchError(f"no IPv4 address on {iface}; set RINGMPI_NETWORK=a.b.c.d/n")
    return str(ipaddress.ip_interface(match.group(1)).network)


class MapFilter:
    """Turn mpiexec's --display map block into one line per host."""

    def __init__(self) -> None:
        self.in_map = False
        self.node = ""
        self.ranks: dict[str, list[int]] = {}

    def feed(self, line: bytes) -> bool:
        """Return True when the line belonged to the map and was consumed."""
        text = line.decode(errors="replace")
        if not self.in_map:
            if "JOB MAP" in text:
                self.in_map = True
                return True
            return not self.ranks and not text.strip()  # blank line before the map
        if re.fullmatch(r"\s*=+\s*", text):
            self.in_map = False
            for host, ranks in self.ranks.items():
                listed = " ".join(str(r) for r in sorted(ranks))
                print(
                    f"# {host}: rank{'s' if len(ranks) > 1 else ''} {listed}",
                    file=sys.stderr,
                    flush=True,
                )
            return True
        node = re.match(r"Data for node: (\S+)", text)
        if node:
            self.node = node.group(1)
        proc = re.search(r"Data for proc: \[[^,\]]+,(\d+)\]", text)
        if proc:
            self.ranks.setdefault(self.node, []).append(int(proc.group(1)))
        return True


def mca_defaults(argv: Sequence[str], net: str) -> list[str]:
    """Return the cluster's MCA settings, less those that argv sets itself.

    Shared memory within a node, TCP between nodes on the cluster network
    only; shared memory's single-copy (CMA, process_vm_readv) is switched off
    because container security profiles may forbid it.
    """
    given = {argv[i + 1] for i in range(len(argv) - 1) if argv[i] in MCA_FLAGS}
    settings = [
        ("--mca", "btl", "self,sm,tcp"),
        ("--mca", "smsc", "^cma"),
        ("--mca", "btl_tcp_if_include", net),
        ("--mca", "oob_tcp_if_include", net),
        *KEEPALIVE,
    ]
    return [
        word for flag, name, value in settings if name not in given for word in (flag, name, value)
    ]


def seconds(name: str, default: float) -> float:
    """Return the environment variable name as seconds >= 0 (0: off)."""
    value = os.environ.get(name, "").strip()
    try:
        number = float(value) if value else default
    except ValueError:
        number = -1.0
    if not 0 <= number < 1e9:  # also nan and inf
        raise LaunchError(f"{name} must be a number of seconds, not {value!r}")
    return number


def run(argv: Sequence[str]) -> int:
    if os.getuid() == 0:
        raise LaunchError("run me as the user mpi (docker exec -u mpi ...)")
    if not argv:
        raise LaunchError("usage: ringmpi-launch <mpiexec arguments>")
    head = socket.gethostname()
    nodes = read_nodes(head)
    write_known_hosts()
    workers = [h for h in nodes if h != head]
    up = check_hosts(workers)
    for host in workers:
        if not up[host]:
            print(f"{PROG}: note: leaving out {host}: no ssh login", file=sys.stderr)
    hosts = [head] + [h for h in workers if up[h]]
    hostfile = Path.home() / "hostfile"
    hostfile.write_text("".join(f"{h} slots={nodes[h]}\n" for h in hosts))
    print(
        "# hostfile: " + ", ".join(f"{h} slots={nodes[h]}" for h in hosts),
        file=sys.stderr,
        flush=True,
    )

    cmd = [MPIEXEC, "--hostfile", str(hostfile)]
    if "--display" not in argv:
        cmd += ["--display", "map"]
    cmd += mca_defaults(argv, cluster_network())
    cmd += ["-x", "PATH", *argv]
    env = dict(os.environ)
    # More ranks than slots is allowed; an explicit --map-by still wins.
    env.setdefault("PRTE_MCA_rmaps_default_mapping_policy", "slot:oversubscribe")
    timeout = seconds("RINGMPI_TIMEOUT", 0)
    node_timeout = seconds("RINGMPI_NODE_TIMEOUT", NODE_TIMEOUT)

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, start_new_session=True)

    def stop(signum: int, frame: object) -> None:
        os.killpg(proc.pid, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    if deadline is not None:
        signal.signal(signal.SIGALRM, lambda *_: kill_after_timeout(proc, timeout))
        signal.setitimer(signal.ITIMER_REAL, timeout)
    mapper = MapFilter()
    watch = NodeWatch(proc, node_timeout)
    assert proc.stdout is not None
    for line in proc.stdout:
        was_map = mapper.in_map
        if not mapper.feed(line):
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        if was_map and not mapper.in_map and not watch.hosts:
            watch.watch([h for h in mapper.ranks if h != head])
    rc = proc.wait()
    watch.stop()
    if rc < 0:  # killed by a signal, as a shell reports it
        rc = 128 - rc
    signal.setitimer(signal.ITIMER_REAL, 0)
    if getattr(proc, "timed_out", False):
        print(
            f"{PROG}: error: mpiexec ran past {timeout:g} s and was killed",
            file=sys.stderr,
            flush=True,
        )
        rc = 124

    # Open MPI 5 may exit 0 after losing a node: check that every node that
    # ran ranks still answers, and fail loudly when one does not.
    used = [h for h in mapper.ranks if h != head]
    # (a host that did not answer the watch's last probe is not asked again:
    # a name Docker's DNS forgot takes 10 s to fail)
    silent = set(watch.lost) | watch.silent
    answers = check_hosts([h for h in used if h not in silent])
    lost = sorted(silent | {h for h, ok in answers.items() if not ok})
    if lost:
        print(
            f"{PROG}: error: lost node{'s' if len(lost) > 1 else ''} during the run: "
            + ", ".join(lost),
            file=sys.stderr,
            flush=True,
        )
        rc = rc or 1
    return rc


def kill_after_timeout(proc: subprocess.Popen[bytes], timeout: float) -> None:
    proc.timed_out = True  # type: ignore[attr-defined]
    terminate(proc)


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM mpiexec's process group, SIGKILL it KILL_GRACE s later."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except LaunchError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
