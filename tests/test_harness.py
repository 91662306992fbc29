"""Unit tests of ``ringmpi.harness`` in a one-rank world, where ``launch`` returns, not aborts."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading

import pytest

from ringmpi.harness import (
    LAUNCHER_RANK_VARS,
    LAUNCHER_SIZE_VARS,
    ArgumentParser,
    LauncherMismatch,
    RingmpiError,
    UsageError,
    check_launcher,
    int_arg,
    launch,
    positive_float,
    rank_prefix,
)
from ringmpi.harness import _harness as harness

HOST = socket.gethostname()


@pytest.fixture(autouse=True)
def no_launcher_env(monkeypatch):
    """Run as if started without a launcher, whatever started pytest."""
    for name in (*LAUNCHER_SIZE_VARS, *LAUNCHER_RANK_VARS, "RINGMPI_SKIP_LAUNCHER_CHECK"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("name", LAUNCHER_SIZE_VARS)
def test_check_launcher_detects_a_mismatch(name):
    with pytest.raises(LauncherMismatch, match=f"started 4 processes \\({name}=4\\)") as info:
        check_launcher(1, {name: "4"})
    assert "RINGMPI_SKIP_LAUNCHER_CHECK=1" in str(info.value)
    assert info.value.exit_code == 1 and info.value.collective


@pytest.mark.parametrize(
    ("world_size", "environ"),
    [
        (1, {}),
        (1, {"PMI_SIZE": "1"}),
        (1, {"OMPI_COMM_WORLD_SIZE": "1", "SLURM_STEP_NUM_TASKS": ""}),
        (1, {"PMI_SIZE": "two"}),
        (1, {"SLURM_NTASKS": "8"}),  # the allocation, not this job step
        (2, {"PMI_SIZE": "2"}),
        (4, {"OMPI_COMM_WORLD_SIZE": "4"}),
    ],
)
def test_check_launcher_accepts(world_size, environ):
    check_launcher(world_size, environ)


def test_check_launcher_names_the_srun_fix():
    """srun without --mpi sets only SLURM_* variables: the fix is --mpi=pmix."""
    with pytest.raises(LauncherMismatch, match="srun gave the processes no MPI") as info:
        check_launcher(1, {"SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "4"})
    assert "srun --mpi=pmix" in str(info.value)
    with pytest.raises(LauncherMismatch) as info:
        check_launcher(1, {"PMI_SIZE": "4", "SLURM_STEP_NUM_TASKS": "4"})  # --mpi=pmi2
    assert "--mpi=pmix" not in str(info.value)
    assert "different MPI library" in str(info.value)


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_check_launcher_can_be_skipped(value):
    check_launcher(1, {"PMI_SIZE": "2", "RINGMPI_SKIP_LAUNCHER_CHECK": value})


@pytest.mark.parametrize("value", ["0", "", "no"])
def test_check_launcher_skip_needs_a_true_value(value):
    with pytest.raises(LauncherMismatch):
        check_launcher(1, {"PMI_SIZE": "2", "RINGMPI_SKIP_LAUNCHER_CHECK": value})


@pytest.mark.parametrize("value", ["abc", "2", "-1", "tru"])
def test_a_skip_value_that_is_not_yes_or_no_is_one_error_line(monkeypatch, capsys, value):
    monkeypatch.setenv("RINGMPI_SKIP_LAUNCHER_CHECK", value)
    assert launch(lambda argv: 0, []) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"error: RINGMPI_SKIP_LAUNCHER_CHECK must be 1 or 0 (or yes/no, true/false), not {value!r}"
    )


@pytest.mark.parametrize(
    ("argv0", "prog"),
    [
        ("/venv/bin/ringmpi-ring", "ringmpi-ring"),
        ("/x/ringmpi/ring/__main__.py", "python -m ringmpi.ring"),
        ("ringmpi-fibfarm", "python -m ringmpi.ring"),
    ],
)
def test_the_program_is_named_as_it_was_started(monkeypatch, capsys, argv0, prog):
    monkeypatch.setattr(sys, "argv", [argv0])
    from ringmpi.ring import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert capsys.readouterr().out.startswith(f"{prog} ")


def test_check_launcher_reads_os_environ(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "3")
    with pytest.raises(LauncherMismatch, match="PMI_SIZE=3"):
        check_launcher(1)


def test_rank_prefix():
    assert rank_prefix() == f"[0@{HOST}]"
    assert rank_prefix(5) == f"[5@{HOST}]"


def test_argument_parser_raises_usage_error(capsys):
    parser = ArgumentParser(prog="prog")
    parser.add_argument("--n", type=int)
    message = r"^argument --n: invalid int value: 'x' \(see prog --help\)$"
    with pytest.raises(UsageError, match=message):
        parser.parse_args(["--n", "x"])
    assert capsys.readouterr() == ("", "")


def _raising(exc: BaseException):
    def main(argv):
        raise exc

    return main


def test_launch_returns_the_status_of_main(capsys):
    seen = []

    def main(argv):
        seen.append(argv)
        return 3

    assert launch(main, ["-x"]) == 3
    assert seen == [["-x"]]
    assert capsys.readouterr() == ("", "")


def test_launch_usage_error(capsys):
    assert launch(_raising(UsageError("bad --thing"))) == 2
    assert capsys.readouterr() == ("", "error: bad --thing\n")


def test_launch_collective_error_from_launch_of_ring(capsys):
    from ringmpi.ring import _ring as ring

    assert launch(ring.main, ["--size", "4Q"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: argument -s/--size: invalid size '4Q'")
    assert err.count("\n") == 1


@pytest.mark.parametrize(("exit_code", "collective"), [(1, False), (5, False), (6, True)])
def test_launch_ringmpi_error(capsys, exit_code, collective):
    class Failure(RingmpiError):
        pass

    Failure.exit_code = exit_code
    Failure.collective = collective
    assert launch(_raising(Failure("it went wrong"))) == exit_code
    assert capsys.readouterr() == ("", "error: it went wrong\n")


@pytest.mark.parametrize("code", [0, None, 3])
def test_launch_lets_system_exit_through_in_one_rank(capsys, code):
    with pytest.raises(SystemExit) as info:
        launch(_raising(SystemExit(code)))
    assert info.value.code == code
    assert capsys.readouterr() == ("", "")


def test_launch_prints_an_uncaught_exception_once_with_the_rank(capsys):
    assert launch(_raising(ValueError("boom"))) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert all(line.startswith(f"[0@{HOST}] ") for line in lines), err
    assert lines[0] == f"[0@{HOST}] Traceback (most recent call last):"
    assert lines[-1] == f"[0@{HOST}] ValueError: boom"
    assert err.count("Traceback") == 1


def test_launch_keyboard_interrupt(capsys):
    assert launch(_raising(KeyboardInterrupt())) == 130
    assert capsys.readouterr() == ("", f"error: [0@{HOST}] interrupted\n")


def _never(argv):
    pytest.fail("main ran despite the launcher mismatch")


def test_launch_launcher_mismatch_rank_0_reports(monkeypatch, capsys):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "0")
    assert launch(_never) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: the launcher started 2 processes (PMI_SIZE=2)")
    assert err.count("\n") == 1


def test_launch_launcher_mismatch_other_ranks_are_silent(monkeypatch, capsys):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "2")
    assert launch(_never) == 1
    assert capsys.readouterr() == ("", "")


def test_launch_launcher_mismatch_skipped(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("RINGMPI_SKIP_LAUNCHER_CHECK", "1")
    assert launch(lambda argv: 0) == 0


def test_launch_does_not_abort_a_one_rank_world(monkeypatch):
    def abort(status):
        pytest.fail(f"aborted with {status}")

    monkeypatch.setattr(harness, "_abort", abort)
    assert launch(_raising(RuntimeError("x"))) == 1


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (int_arg(high=5), "6", "must be at most 5, not 6"),
        (int_arg(1), "0", "must be at least 1, not 0"),
        (int_arg(0, 3), "4", "must be between 0 and 3, not 4"),
        (int_arg(), "x", "invalid integer 'x'"),
        (positive_float, "inf", "must be a positive finite number"),
        (positive_float, "nan", "must be a positive finite number"),
        (positive_float, "-1", "must be a positive finite number"),
        (positive_float, "1e-300", "must be a number of seconds from 0.001 to 3.1536e"),
        (positive_float, "1e300", "must be a number of seconds from 0.001 to 3.1536e"),
    ],
)
def test_argument_types_refuse(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)


@pytest.mark.parametrize("value", ["abc", "inf", "nan", "-1", "1e30"])
def test_launch_refuses_a_bad_init_timeout_in_one_line(monkeypatch, capsys, value):
    monkeypatch.setenv("RINGMPI_INIT_TIMEOUT", value)
    assert launch(lambda argv: 0, []) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "RINGMPI_INIT_TIMEOUT must be" in err
    assert "Traceback" not in err


def test_the_farm_does_not_import_the_harness():
    code = "import sys, ringmpi.farm; print('ringmpi.harness' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_fired_watchdog_never_lets_the_run_report_success(monkeypatch):
    aborted = threading.Event()
    monkeypatch.setattr(harness, "_abort", lambda status: aborted.set())
    monkeypatch.setattr(harness.os, "_exit", lambda status: None)  # its last resort
    dog = harness.Watchdog(0.01, "the test run")
    assert aborted.wait(10)
    stopper = threading.Thread(target=dog.stop, daemon=True)
    stopper.start()
    stopper.join(0.5)
    assert stopper.is_alive()  # stop() waits for the abort instead of returning


def test_a_stopped_watchdog_does_not_fire(monkeypatch):
    aborted = threading.Event()
    monkeypatch.setattr(harness, "_abort", lambda status: aborted.set())
    dog = harness.Watchdog(0.3, "the test run")
    dog.stop()
    assert not aborted.wait(0.6)
