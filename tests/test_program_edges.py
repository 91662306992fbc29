"""The programs at their edges: --status under a launcher and beside other flags,
closed standard streams, huge numbers, output paths, warnings under ``-X dev``."""

from __future__ import annotations

import subprocess
import sys

import mpirun as helper
import pytest

from ringmpi import cli as climod
from ringmpi.fibfarm import _run as fibfarm

FIBFARM = ["-m", "ringmpi.fibfarm"]


@pytest.fixture(scope="module")
def journal(tmp_path_factory):
    """A journal of one finished run of fib(20) and fib(21)."""
    path = tmp_path_factory.mktemp("journal") / "run.db"
    helper.run_python(*FIBFARM, "20", "21", "--journal", str(path), "-q", timeout=60).check(0)
    return path


# --status ------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [[], ["--journal", "{missing}"]],
    ids=["without-journal", "missing-journal"],
)
def test_status_under_a_launcher_says_its_error_once(mpirun, tmp_path, extra):
    extra = [word.format(missing=tmp_path / "none.db") for word in extra]
    result = mpirun(4, *FIBFARM, "25", "--status", *extra, timeout=60)
    assert result.returncode != 0, result.describe()
    assert len(result.error_lines) == 1, result.describe()
    assert not (tmp_path / "none.db").exists()


def test_status_under_a_launcher_prints_once(mpirun, journal):
    result = mpirun(3, *FIBFARM, "--journal", str(journal), "--status", timeout=60).check(0)
    assert result.stdout.count("done 2, failed 0, missing 0 of 2 tasks") == 1, result.describe()


@pytest.mark.parametrize(
    "flags",
    [
        ["--status"],
        ["--stat"],  # argparse takes an unambiguous abbreviation
        ["--status", "--progress", "--trace", "{tmp}/t.json", "--timeline", "{tmp}/t.png"],
        ["--status", "-o", "{tmp}/out.txt", "--json", "--verify"],
        ["--status", "--resume"],
    ],
)
@pytest.mark.parametrize("entry", ["cli", "console-script", "main"])
def test_status_shows_the_journal_and_never_runs(flags, entry, tmp_path, monkeypatch, capsys):
    fresh = tmp_path / "fresh.db"
    argv = ["25", "--journal", str(fresh), *(w.format(tmp=tmp_path) for w in flags)]
    if entry == "cli":
        status = fibfarm.cli(argv)
    elif entry == "console-script":
        monkeypatch.setattr(sys, "argv", ["ringmpi-fibfarm", *argv])
        status = climod.fibfarm()
    else:  # launch(main), as a program that imports main would run it
        from ringmpi.harness import launch

        status = launch(fibfarm.main, argv)
    err = capsys.readouterr().err
    assert status == 1 and err == f"error: no journal at {fresh}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing ran, nothing written


def test_status_beside_other_flags_shows_the_journal(journal, capsys):
    assert fibfarm.cli(["25", "--journal", str(journal), "--stat", "--progress", "-q"]) == 0
    out = capsys.readouterr().out
    assert "done 2, failed 0, missing 0 of 2 tasks" in out and "fib(25)" not in out


# closed standard streams ----------------------------------------------------


def run_closed(argv: list[str], close: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python ARGV`` with stdout or stderr closed (``>&-``, ``2>&-``)."""
    fd = {"stdout": 1, "stderr": 2}[close]
    return subprocess.run(
        ["sh", "-c", f'exec "$@" {fd}>&-', "sh", sys.executable, *argv],
        capture_output=False,
        stdout=subprocess.PIPE if close == "stderr" else None,
        stderr=subprocess.PIPE if close == "stdout" else None,
        stdin=subprocess.DEVNULL,
        text=True,
        env=helper.child_env(),
        cwd=helper.ROOT,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "argv",
    [
        [*FIBFARM, "20-23", "--progress"],
        [*FIBFARM, "20-23", "--progress", "--journal", "{tmp}/run.db"],
        ["-m", "ringmpi.ring", "-q"],
    ],
)
def test_a_closed_stderr_still_runs(argv, tmp_path):
    done = run_closed([w.format(tmp=tmp_path) for w in argv], "stderr")
    assert done.returncode == 0
    if "ringmpi.fibfarm" in argv:
        assert "fib(23) = 28657" in done.stdout


@pytest.mark.parametrize(
    "argv",
    [
        [*FIBFARM, "--bogus"],
        [*FIBFARM, "0"],
        [*FIBFARM, "--status"],
        ["-m", "ringmpi.ring", "--size", "x"],
        ["-m", "ringmpi.bench", "--bogus"],
        ["-m", "ringmpi", "--bogus"],
    ],
)
def test_bad_usage_with_stderr_closed_exits_2(argv):
    assert run_closed(argv, "stderr").returncode == 2
