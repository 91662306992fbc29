"""The ring on real communicators: the world, COMM_SELF and sub-communicators."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from ringmpi.harness import UsageError
from ringmpi.ring import RingError, expected_message, pass_message, time_ring
from ringmpi.ring import _buffers as buffers
from ringmpi.ring import _ring as ring

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("rounds", [1, 3])
def test_pass_message(comm, collectively, rounds):
    with collectively:
        message = pass_message(comm, rounds)
        if comm.Get_rank() == 0:
            assert message == expected_message(comm.Get_size())
        else:
            assert message is None


def test_pass_message_zero_rounds(comm, collectively):
    with collectively:
        assert pass_message(comm, 0) is None


@pytest.mark.parametrize("pickled", [False, True], ids=["buffer", "pickle"])
@pytest.mark.parametrize("nbytes", [1, 4096, 1 << 20])
def test_time_ring(comm, collectively, nbytes, pickled):
    with collectively:
        timing = time_ring(comm, nbytes, rounds=4, repeat=3, warmup=2, pickled=pickled)
        if comm.Get_rank() == 0:
            assert timing is not None
            assert (timing.size, timing.hops, len(timing.hop_us)) == (nbytes, comm.Get_size(), 3)
            assert all(us > 0 for us in timing.hop_us)
            assert timing.min_us <= timing.mean_us
            assert timing.bandwidth_mbs == pytest.approx(nbytes / timing.min_us)
        else:
            assert timing is None


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("pickled", [False, True], ids=["buffer", "pickle"])
def test_time_ring_detects_a_changed_payload(world, collectively, monkeypatch, pickled):
    if world.Get_rank() == 0:
        # Rank 0 sends a payload other than the one every rank checks for.
        real = buffers.pattern
        calls = []

        def wrong_once(nbytes, offset=0):
            calls.append(nbytes)
            return np.full(nbytes, 7, np.uint8) if len(calls) == 1 else real(nbytes, offset)

        monkeypatch.setattr(buffers, "pattern", wrong_once)
    with collectively, pytest.raises(RingError, match="1024-byte payload arrived changed"):
        time_ring(world, 1024, rounds=2, warmup=0, pickled=pickled)


def test_main_prints_the_ring_on_rank_0_only(world, collectively, capsys):
    with collectively:
        assert ring.main([]) == 0
        out = capsys.readouterr().out
        hosts = world.allgather(socket.gethostname())
        size = world.Get_size()
        if world.Get_rank() == 0:
            assert out.splitlines() == [
                *(f"I am rank {rank} of {size} on node {host}" for rank, host in enumerate(hosts)),
                f'Processor 0 received message "{expected_message(size)}" from rank {size - 1}',
            ]
        else:
            assert out == ""


def test_main_json(world, collectively, capsys):
    with collectively:
        argv = ["--json", "--size", "1K", "--rounds", "5", "--repeat", "2", "--warmup", "1"]
        assert ring.main(argv) == 0
        out = capsys.readouterr().out
        if world.Get_rank() == 0:
            report = json.loads(out)
            assert report["ranks"] == world.Get_size()
            assert report["mode"] == "buffer"
            [timing] = report["timings"]
            assert (timing["size"], timing["hops"]) == (1024, world.Get_size())
            assert len(timing["hop_us"]) == 2
        else:
            assert out == ""


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--size", "4Q"], ["--pickle"]])
def test_main_bad_usage_raises_on_every_rank(collectively, argv):
    with collectively, pytest.raises(UsageError):
        ring.main(argv)
