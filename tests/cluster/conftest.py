"""A throw-away docker compose cluster for the cluster tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = str(ROOT / "scripts" / "cluster")
#: Own compose project per test session, so neither a user's cluster (project
#: "ringmpi") nor a test session running beside this one is touched.
PREFIX = "ringmpi-test-"
PROJECT = os.environ.get("RINGMPI_TEST_PROJECT", f"{PREFIX}{os.getpid()}")
IMAGE = os.environ.get("RINGMPI_IMAGE", "ringmpi:latest")
SLURM_IMAGE = os.environ.get("RINGMPI_SLURM_IMAGE", "ringmpi-slurm:latest")
WORKERS = 2
SLURM_WORKERS = 3


def _quiet(cmd: Sequence[str], timeout: float = 60) -> bool:
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _why_not_runnable() -> str | None:
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    if not _quiet(["docker", "info"], timeout=30):
        return "no Docker engine answers (docker info failed)"
    if not (_quiet(["docker", "compose", "version"]) or shutil.which("docker-compose")):
        return "neither 'docker compose' nor docker-compose is installed"
    return None


class Cluster:
    """Runs scripts/cluster for the test project, always under a timeout."""

    def __init__(self, project: str, slurm: bool = False) -> None:
        self.project = project
        self.slurm = slurm
        self.workers = SLURM_WORKERS if slurm else WORKERS
        self.image = SLURM_IMAGE if slurm else IMAGE
        self.env = dict(
            os.environ,
            RINGMPI_PROJECT=project,
            RINGMPI_IMAGE=IMAGE,
            RINGMPI_SLURM_IMAGE=SLURM_IMAGE,
        )

    def cluster(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLUSTER, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run(self, *mpiexec_args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        """Run mpiexec on the head; the run is killed inside after timeout s."""
        return self.cluster(
            "run", "--timeout", str(timeout), "--", *mpiexec_args, timeout=timeout + 60
        )

    def popen(self, *mpiexec_args: str, timeout: int, stdout, stderr) -> subprocess.Popen[str]:
        return self.cluster_popen(
            "run", "--timeout", str(timeout), "--", *mpiexec_args, stdout=stdout, stderr=stderr
        )

    def cluster_popen(self, *args: str, stdout, stderr) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [CLUSTER, *args], env=self.env, stdout=stdout, stderr=stderr, text=True
        )

    def exec(self, service: str, *cmd: str, user: str = "mpi") -> subprocess.CompletedProcess[str]:
        """Run cmd in service's container (docker exec), under a timeout."""
        return subprocess.run(
            ["docker", "exec", "-u", user, self.container(service), *cmd],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def container(self, service: str) -> str:
        out = subprocess.run(
            [
                "docker",
                "ps",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={self.project}",
                "--filter",
                f"label=com.docker.compose.service={service}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
        assert out, f"no running container for {service}"
        return out[0]

    def up(self, workers: int | None = None, extra: Sequence[str] = ()) -> None:
        flavour = ["--slurm"] if self.slurm else []
        workers = self.workers if workers is None else workers
        done = self.cluster("up", *flavour, "--workers", str(workers), *extra, timeout=300)
        assert done.returncode == 0, f"cluster up failed:\n{done.stdout}\n{done.stderr}"

    def down(self) -> None:
        self.cluster("down", timeout=180)


def _remove_stale_clusters() -> None:
    """Take down test clusters whose test session died without cleaning up."""
    listed = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            "label=com.docker.compose.project",
            "--format",
            '{{.Label "com.docker.compose.project"}}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.split()
    for project in sorted(set(listed)):
        pid = project[len(PREFIX) :].removesuffix("-slurm")
        if project.startswith(PREFIX) and pid.isdigit() and not _alive(int(pid)):
            Cluster(project).down()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start(slurm: bool) -> Cluster:
    """Build the image and return the (not yet started) cluster, or skip."""
    why = _why_not_runnable()
    if why is not None:
        if os.environ.get("RINGMPI_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"cluster tests required (RINGMPI_REQUIRE_CLUSTER=1) but {why}")
        pytest.skip(f"cluster tests need Docker: {why}")
    # Always build: Docker's layer cache makes it quick when nothing changed,
    # and an image older than the sources would test old code.
    flavour = ["--flavour", "slurm", "--slurm-tag", SLURM_IMAGE] if slurm else ["--tag", IMAGE]
    if not slurm:
        flavour = ["--flavour", "plain", *flavour]
    build = subprocess.run(
        [str(ROOT / "scripts" / "build-images"), *flavour],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert build.returncode == 0, f"image build failed:\n{build.stderr[-4000:]}"
    _remove_stale_clusters()
    return Cluster(f"{PROJECT}-slurm" if slurm else PROJECT, slurm=slurm)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A head and WORKERS workers, torn down at the end even when tests fail."""
    c = _start(slurm=False)
    try:
        c.up()
        yield c
    finally:
        c.down()


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Cluster]:
    """A Slurm head and SLURM_WORKERS compute nodes, torn down at the end."""
    c = _start(slurm=True)
    try:
        c.up()
        yield c
    finally:
        c.down()
