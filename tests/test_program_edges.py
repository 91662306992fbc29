"""The programs at their edges: --status under a launcher and beside other flags,
closed standard streams, huge numbers, output paths, warnings under ``-X dev``."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import mpirun as helper
import pytest

from ringmpi import cli as climod
from ringmpi.fibfarm import _run as fibfarm
from ringmpi.harness import UsageError

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


# huge numbers ----------------------------------------------------------------

HUGE = "1" * 100_000


def numeric_options():
    """Every option of every program that reads a number, with each parser."""
    from ringmpi.bench._parser import build_parser as bench_parser
    from ringmpi.fibfarm import build_parser as fibfarm_parser
    from ringmpi.ring._ring import build_parser as ring_parser

    cases = []
    for name, build, prefix in [
        ("ring", ring_parser, []),
        ("fibfarm", fibfarm_parser, []),
        *[(f"bench {c}", bench_parser, [c]) for c in ("fib", "ring", "pool", "data", "engine")],
    ]:
        parser = build()
        if prefix:
            parser = next(
                a for a in parser._actions if a.choices and prefix[0] in a.choices
            ).choices[prefix[0]]
        for action in parser._actions:
            if action.option_strings and action.type is not None and action.choices is None:
                cases.append((name, build, [*prefix, action.option_strings[-1]]))
    return cases


NUMERIC = numeric_options()


def short_refusal(build, argv) -> str:
    with pytest.raises(Exception) as caught:
        build().parse_args(argv)
    message = str(caught.value)
    assert type(caught.value).__name__ == "UsageError", message[:300]
    assert not any(c * 41 in message for c in "19"), message[:300]  # never echoed whole
    assert len(message) < 400 and "set_int_max_str_digits" not in message, message[:300]
    return message


def test_every_numeric_option_is_found():
    flags = {flags[-1] for _, _, flags in NUMERIC}
    assert {"--rounds", "--size", "--split", "--timeout", "--grace", "--processes"} <= flags


@pytest.mark.parametrize(("program", "build", "flags"), NUMERIC, ids=lambda v: str(v))
@pytest.mark.parametrize(
    "number", [HUGE, "-" + HUGE, "9" * 4000, HUGE + ".5", "0" * 5000 + "1e9999"]
)
def test_a_huge_number_for_any_option_is_one_short_line(program, build, flags, number):
    short_refusal(build, [*flags, number])


@pytest.mark.parametrize(
    "tasks", [[HUGE], ["1-" + HUGE], [HUGE + "-3"], ["9" * 4000], ["-" + HUGE], ["x" * 100_000]]
)
def test_a_huge_task_is_one_short_line(tasks):
    from ringmpi.fibfarm import build_parser

    with pytest.raises(UsageError) as caught:
        fibfarm.checked_tasks(build_parser().parse_args(tasks))
    assert len(str(caught.value)) < 200, str(caught.value)[:300]


def test_huge_unknown_words_and_choices_are_cut():
    from ringmpi.fibfarm import build_parser

    assert "(100002 characters)" in short_refusal(build_parser, ["--" + HUGE])
    assert "characters)" in short_refusal(build_parser, ["--schedule", HUGE])


@pytest.mark.parametrize(
    "name",
    ["RINGMPI_CORES", "RINGMPI_POLL_MAX_SLEEP", "RINGMPI_JOIN_TIMEOUT", "RINGMPI_INIT_TIMEOUT"],
)
def test_a_huge_variable_is_one_short_line(name):
    from ringmpi.base import config

    with pytest.raises(ValueError) as caught:
        if name == "RINGMPI_INIT_TIMEOUT":
            config.init_timeout({name: HUGE})
        else:
            config.check({name: HUGE})
    assert len(str(caught.value)) < 200


def test_a_huge_number_under_mpiexec_is_one_short_line(mpirun):
    result = mpirun(2, "-m", "ringmpi.ring", "--size", HUGE, timeout=60)
    assert result.returncode == 2 and len(result.error_lines) == 1, result.describe()[:2000]
    assert len(result.error_lines[0]) < 200 and "1" * 41 not in result.stderr


# --timeline, --trace and -o ----------------------------------------------------


def synthetic_stats(count: int, ranks: int = 4):
    """A traced run of ``count`` short tasks, as the farm records it."""
    from ringmpi.farm._outcome import FarmStats, TaskSpan

    spans, clock = [], [0.0] * ranks
    for i in range(count):
        rank, seconds = i % ranks, 1e-4 * (1 + i % 7)
        start = clock[rank]
        spans.append(TaskSpan(i, rank, "vm", start, start + seconds, i // 16, start, start))
        clock[rank] += seconds
    return FarmStats(elapsed=max(clock), hosts=["vm"] * ranks, trace=spans)


def test_a_timeline_of_many_tasks_draws_in_seconds(tmp_path):
    pytest.importorskip("matplotlib")
    from ringmpi.farm import timeline

    # One autoscaled bar per task took 45 s here for 8,000 tasks (quadratic);
    # one collection per row draws 200,000 in about 6 s.
    stats = synthetic_stats(8000)
    start = time.perf_counter()
    timeline.draw_timeline(tmp_path / "t.png", stats)
    assert time.perf_counter() - start < 15
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("name", "magic"), [("tl", b"\x89PNG"), ("t.svg", b"<?xm"), ("t.pdf", b"%PDF")]
)
def test_a_timeline_is_written_at_exactly_the_path_given(tmp_path, name, magic):
    pytest.importorskip("matplotlib")
    from ringmpi.farm import timeline

    timeline.draw_timeline(tmp_path / name, synthetic_stats(10))
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert (tmp_path / name).read_bytes()[:4] == magic


def test_a_timeline_that_cannot_be_written_is_an_error(pyrun):
    pytest.importorskip("matplotlib")
    result = pyrun(*FIBFARM, "20-22", "--timeline", "/dev/full", timeout=60)
    assert result.returncode == 1, result.describe()
    assert result.error_lines == ["error: cannot write /dev/full: No space left on device"]
    assert "done:" not in result.stdout


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--trace", "F", "-o", "F"], "error: --trace and -o both name F: give each its own file"),
        (["--trace", "F", "-o", "./F"], "error: --trace and -o both name ./F"),
        (["--journal", "J", "-o", "J"], "error: --journal and -o both name J"),
        (["--trace", "F.png", "--timeline", "F.png"], "error: --trace and --timeline both name"),
        (["--timeline", "t.txt"], "error: --timeline t.txt: cannot draw a timeline as .txt"),
    ],
)
def test_outputs_that_would_overwrite_each_other_are_refused(argv, line, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as caught:
        fibfarm.main(["20", *argv])
    assert f"error: {caught.value}".startswith(line)
    assert list(tmp_path.iterdir()) == []


def test_devices_may_take_several_outputs(pyrun):
    result = pyrun(*FIBFARM, "20", "--trace", "/dev/null", "-o", "/dev/null", timeout=60)
    assert result.returncode == 0 and not result.stderr, result.describe()


def test_the_timeline_marks_a_lost_rank_and_a_spare_that_took_over():
    from ringmpi.farm import timeline
    from ringmpi.farm._outcome import LostWorker, WorkerStats

    stats = synthetic_stats(12, ranks=3)
    stats.hosts.append("vm")  # rank 3: a spare with no free core at first
    stats.idle_ranks = [3]
    stats.lost = [LostWorker(1, "vm", [1, 5])]
    stats.trace = [s for s in stats.trace if s.rank != 1 or s.index < 4]
    for s in stats.trace[6:]:
        s.rank = 3 if s.rank == 1 else s.rank
    stats.workers = [WorkerStats(r, "vm", tasks=1) for r in (0, 2, 3)]
    labels = timeline.row_labels(stats)
    assert labels == ["rank 0@vm", "rank 1@vm (lost)", "rank 2@vm", "rank 3@vm (spare)"]
    names = [
        e["args"]["name"]
        for e in timeline.chrome_trace(stats)["traceEvents"]
        if e["name"] == "thread_name"
    ]
    assert names == labels
    stats.workers, stats.trace = stats.workers[:2], [s for s in stats.trace if s.rank != 3]
    assert timeline.row_labels(stats)[3] == "rank 3@vm (idle)"


# --fault-tolerant under other MPI libraries ------------------------------------

MPICH = "MPICH Version:      4.1.2\nMPICH Release date: Wed Jun  7 15:22:45 CDT 2023\n"
INTEL = "Intel(R) MPI Library 2021.10 for Linux* OS\n"
OPEN_MPI_4 = (
    "Open MPI v4.1.5, package: Debian OpenMPI, ident: 4.1.5, repo rev: v4.1.5, Feb 23, 2023"
)
OPEN_MPI_5 = "Open MPI v5.0.11, package: Open MPI user@localhost Distribution, ident: 5.0.11"


@pytest.mark.parametrize(
    ("version", "says"),
    [
        (MPICH, "this MPI (MPICH Version: 4.1.2) has none that ringmpi can use"),
        (INTEL, "this MPI (Intel(R) MPI Library 2021.10 for Linux* OS) has none"),
        (OPEN_MPI_4, "has no 'mpiexec --with-ft ulfm': fault tolerance needs Open MPI 5"),
        (OPEN_MPI_5, "launch with 'mpiexec --with-ft ulfm'"),
    ],
)
def test_the_fault_tolerance_hint_fits_the_mpi_library(version, says):
    from ringmpi.base import mpilib

    hint = mpilib.fault_tolerance_hint(version)
    assert says in hint
    if version is not OPEN_MPI_5:
        assert not hint.startswith("launch with")


@pytest.mark.parametrize("api", ["farm", "executor"])
def test_fault_tolerant_under_mpich_does_not_send_users_to_open_mpi(api, monkeypatch, caplog):
    from mpi4py import MPI

    from ringmpi import FarmExecutor
    from ringmpi.base import mpilib
    from ringmpi.farm import Farm

    monkeypatch.setattr(mpilib, "library_version", lambda: MPICH)
    monkeypatch.delenv("OMPI_MCA_mpi_ft_enable", raising=False)
    if api == "farm":
        assert Farm(MPI.COMM_SELF, abs, fault_tolerant=True).map([-1, -2]) == [1, 2]
    else:
        with FarmExecutor(comm=MPI.COMM_SELF, fault_tolerant=True) as pool:
            assert pool.submit(abs, -3).result() == 3
    warnings = [r.getMessage() for r in caplog.records if "fault tolerance" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "MPICH Version: 4.1.2" in warnings[0] and "launch with" not in warnings[0]


# MPI not initialized -------------------------------------------------------------

NOT_INITIALIZED = """
import sys
import mpi4py
mpi4py.rc.initialize = False
mode = sys.argv[1]
from ringmpi import FarmExecutor, FarmPool
from ringmpi.farm import farm_map
from ringmpi.harness import launch

def use():
    if mode.endswith("pool"):
        with FarmPool() as pool:
            print(pool.map(abs, [-1, -2]))
    elif mode.endswith("executor"):
        with FarmExecutor() as ex:
            print(list(ex.map(abs, [-1, -2])))
    else:
        from mpi4py import MPI
        print(farm_map(MPI.COMM_WORLD, abs, [-1]))
    return 0

if mode.startswith("finalized"):
    from mpi4py import MPI
    MPI.Init()
    MPI.Finalize()
sys.exit(launch(lambda argv: use(), []) if mode.startswith("launch") else use())
"""


@pytest.mark.parametrize(
    "mode", ["launch-pool", "launch-farm", "pool", "executor", "farm", "finalized-pool"]
)
def test_mpi_not_initialized_is_one_line_of_ours(mode, mpirun, tmp_path):
    script = tmp_path / "noinit.py"
    script.write_text(NOT_INITIALIZED)
    result = mpirun(2, str(script), mode, timeout=60)
    assert result.returncode != 0, result.describe()
    assert "before MPI_INIT" not in result.stderr, result.describe()
    why = "finalized" if mode.startswith("finalized") else "not initialized"
    assert f"MPI {'has already been' if why == 'finalized' else 'is'} {why}" in result.stderr
    if mode.startswith("launch"):
        assert len(result.error_lines) == 1 and "Traceback" not in result.stderr, result.describe()


# the programs under -X dev -W error -------------------------------------------------

#: Each program, with the flags that open files, pipes, children and threads.
DEV_RUNS = {
    "ring": (3, ["-m", "ringmpi.ring", "--json"]),
    "ring-sweep": (2, ["-m", "ringmpi.ring", "--sweep", "1:4K", "-q"]),
    "fibfarm": (
        3,
        [
            *FIBFARM,
            "20-25",
            "--journal",
            "{tmp}/run.db",
            "--trace",
            "{tmp}/t.json",
            "--progress",
            "-o",
            "{tmp}/out.txt",
        ],
    ),
    "fibfarm-timeline": (2, [*FIBFARM, "20-23", "--timeline", "{tmp}/t.png", "--split", "2"]),
    "fibfarm-status": (1, [*FIBFARM, "--journal", "{tmp}/none.db", "--status"]),
    "bench-fib": (3, ["-m", "ringmpi.bench", "fib", "--quick"]),
}


@pytest.mark.parametrize("name", list(DEV_RUNS))
def test_the_programs_run_clean_under_dev_mode(name, mpirun, tmp_path):
    """``-X dev -W error``: an unclosed file, a leaked child or thread, a
    deprecation is an error in every rank, as the suite's own
    ``filterwarnings = ["error"]`` makes it in-process."""
    n, argv = DEV_RUNS[name]
    if "--timeline" in argv:
        pytest.importorskip("matplotlib")
    argv = [w.format(tmp=tmp_path) for w in argv]
    result = mpirun(n, "-X", "dev", "-W", "error", *argv, timeout=240)
    assert "Warning" not in result.stderr and "Exception ignored" not in result.stderr, (
        result.describe()
    )
    assert result.returncode == (1 if name == "fibfarm-status" else 0), result.describe()


# what tasks leave running ------------------------------------------------------------

LEAVES_RUNNING = """
import subprocess, sys, threading, time
from ringmpi import FarmExecutor
from ringmpi.farm import farm_map
from ringmpi.harness import launch

def leave_thread(seconds):
    threading.Thread(target=time.sleep, args=(seconds,), name="left-behind").start()
    return seconds

def leave_child(seconds):
    subprocess.Popen(["sleep", str(seconds)])
    return seconds

def main(argv):
    from mpi4py import MPI
    fn = leave_thread if sys.argv[2] == "thread" else leave_child
    if sys.argv[1] == "farm":
        print(farm_map(MPI.COMM_WORLD, fn, [3] * 4, chunksize=1))
    else:
        with FarmExecutor() as pool:
            if pool is not None:
                print(list(pool.map(fn, [3] * 4)))
    return 0

sys.exit(launch(main, []))
"""


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("api", ["farm", "executor"])
@pytest.mark.parametrize("what", ["thread", "child"])
def test_what_a_task_left_running_is_named_at_the_end(api, what, n, mpirun, tmp_path):
    # At -n 1 the root computes, on a daemon thread: the threads its tasks
    # start are daemons too, which stop when the program ends; it says so.
    script = tmp_path / "leaves.py"
    script.write_text(LEAVES_RUNNING)
    result = mpirun(n, str(script), api, what, timeout=60).check(0)
    assert "[3, 3, 3, 3]" in result.stdout
    lines = [line for line in result.stderr_lines if "left" in line and "running" in line]
    assert lines, result.describe()
    named = "thread 'left-behind'" if what == "thread" else "child process "
    assert all(named in line for line in lines), result.describe()
    where = (
        r"running on rank 0@\S+, the root, after the farm"
        if n == 1 and what == "thread"
        else r"running on rank \d@\S+ after the farm"
    )
    assert all(re.search(where, line) for line in lines), result.describe()
    assert len(lines) <= 3  # one line per rank that ran such a task, at most


# a task that calls a collective ---------------------------------------------------

COLLECTIVE_IN_TASK = """
import sys
from mpi4py import MPI
from ringmpi.farm import farm_map
from ringmpi.harness import launch

def gather_in_task(x):
    return MPI.COMM_WORLD.allreduce(x)  # the other ranks are not in this call

def main(argv):
    print(farm_map(MPI.COMM_WORLD, gather_in_task, list(range(6)), task_timeout=3))
    return 0

sys.exit(launch(main, []))
"""


def test_a_task_calling_a_collective_ends_with_task_timeout(mpirun, tmp_path):
    """As README's failure table says: the collective cannot complete (the other
    ranks are in the farm, not in it); ``task_timeout`` ends the job with one line."""
    script = tmp_path / "collective.py"
    script.write_text(COLLECTIVE_IN_TASK)
    result = mpirun(3, str(script), timeout=60)
    assert result.returncode != 0 and result.elapsed < 30, result.describe()
    assert len(result.error_lines) == 1, result.describe()
    assert re.search(
        r"rank \d@\S+ has run task\(s\) .* past the limit of 3 s", result.error_lines[0]
    )


def test_readme_documents_a_task_calling_a_collective():
    readme = (helper.ROOT / "docs" / "library" / "failures.md").read_text()
    assert "a task calls an MPI collective on `COMM_WORLD`" in readme


NESTED_FARM = """
import sys
from mpi4py import MPI
from ringmpi import FarmExecutor
from ringmpi.farm import farm_map
from ringmpi.harness import launch

def inner(x):
    return x + 1

def nested(x):
    if sys.argv[1] == "world-farm":
        return farm_map(MPI.COMM_WORLD, inner, [x])
    if sys.argv[1] == "world-executor":
        with FarmExecutor() as pool:
            return pool.submit(inner, x).result() if pool else None
    return farm_map(MPI.COMM_SELF, inner, [x])[0]  # allowed: one rank

def main(argv):
    print(farm_map(MPI.COMM_WORLD, nested, list(range(4)), chunksize=1))
    return 0

sys.exit(launch(main, []))
"""


@pytest.mark.parametrize("mode", ["world-farm", "world-executor", "self-farm"])
def test_a_farm_started_inside_a_task_is_refused(mode, mpirun, tmp_path):
    script = tmp_path / "nested.py"
    script.write_text(NESTED_FARM)
    result = mpirun(3, str(script), mode, timeout=60)
    if mode == "self-farm":
        assert result.returncode == 0 and "[1, 2, 3, 4]" in result.stdout, result.describe()
        return
    assert result.returncode != 0 and result.elapsed < 30, result.describe()
    assert len(result.error_lines) == 1, result.describe()
    assert re.search(
        r"failed on rank \d@\S+: .*a task cannot start a farm over 3 ranks", result.error_lines[0]
    ), result.describe()
