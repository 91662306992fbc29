"""The harness on every rank of a real world: collective errors, the launcher check, output."""

from __future__ import annotations

import socket

import pytest

from ringmpi.harness import RingmpiError, UsageError, check_launcher, launch, rank_prefix
from ringmpi.ring import main

pytestmark = pytest.mark.mpi


def test_tag_names_the_world_rank(world, collectively):
    with collectively:
        assert rank_prefix() == f"[{world.Get_rank()}@{socket.gethostname()}]"


def test_launch_returns_the_status_on_every_rank(world, collectively):
    def program(argv):
        return world.allreduce(1) + len(argv)

    with collectively:
        assert launch(program, ["a", "b"]) == world.Get_size() + 2


def test_usage_error_is_reported_once_and_every_rank_returns_2(world, collectively, capsys):
    with collectively:
        assert launch(main, ["--rounds", "-3"]) == 2
        out, err = capsys.readouterr()
        errs = world.gather(err, root=0)
        if world.Get_rank() == 0:
            assert errs is not None
            assert errs[0].startswith(
                "error: argument -r/--rounds: must be between 1 and 100000000, not -3"
            )
            assert errs[0].count("\n") == 1
            assert errs[1:] == [""] * (world.Get_size() - 1)
        assert out == ""


def test_collective_error_is_reported_once(world, collectively, capsys):
    class Agreed(RingmpiError):
        collective = True
        exit_code = 4

    def program(argv):
        world.Barrier()
        raise Agreed("everyone saw it")

    with collectively:
        assert launch(program) == 4
        err = capsys.readouterr().err
        expected = "error: everyone saw it\n" if world.Get_rank() == 0 else ""
        assert err == expected


def test_help_is_printed_by_rank_0_only(world, collectively, capsys):
    with collectively:
        with pytest.raises(SystemExit) as info:
            launch(main, ["--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        if world.Get_rank() == 0:
            assert out.startswith("usage: python -m ringmpi.ring")
        else:
            assert out == ""


def test_check_launcher_accepts_the_real_world(world, collectively, monkeypatch):
    monkeypatch.setenv("PMI_SIZE", str(world.Get_size()))
    with collectively:
        check_launcher(world.Get_size())


def test_usage_error_raised_by_main_on_every_rank(collectively):
    with collectively, pytest.raises(UsageError, match="needs --size or --sweep"):
        main(["--pickle"])
