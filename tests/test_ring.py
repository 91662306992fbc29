"""Unit and in-process command-line tests of ``ringmpi.ring`` (a one-rank world)."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from ringmpi.harness import UsageError
from ringmpi.ring import _ring as ring
from ringmpi.ring import (
    build_parser,
    expected_message,
    main,
    neighbours,
    parse_size,
    parse_sweep,
)


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [
        ("64", 64),
        ("1", 1),
        ("1K", 1024),
        ("1k", 1024),
        ("4M", 4 << 20),
        ("1G", 1 << 30),
        ("1GiB", 1 << 30),
        ("2KB", 2048),
        (" 8 ", 8),
    ],
)
def test_parse_size(text, nbytes):
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["4Q", "", "K", "1.5K", "-1", "-64", "1T", "4 M B", "0x10"])
def test_parse_size_rejects_garbage(text):
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize("text", ["0", "0K"])
def test_parse_size_rejects_zero(text):
    with pytest.raises(ValueError, match="at least 1 byte"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "sizes"),
    [
        ("1:8", [1, 2, 4, 8]),
        ("1K:4K", [1024, 2048, 4096]),
        ("64:64", [64]),
        ("3:10", [3, 6, 10]),
        ("1:4M", [1 << k for k in range(23)]),
    ],
)
def test_parse_sweep(text, sizes):
    assert parse_sweep(text) == sizes


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("4M:1K", "MIN is larger than MAX"),
        ("1K", "use MIN:MAX"),
        ("1:4Q", "invalid size"),
        (":4K", "invalid size"),
        ("0:4K", "at least 1 byte"),
    ],
)
def test_parse_sweep_rejects(text, match):
    with pytest.raises(ValueError, match=match):
        parse_sweep(text)


@pytest.mark.parametrize(
    ("rank", "size", "expected"),
    [
        (0, 1, (0, 0)),
        (0, 2, (1, 1)),
        (1, 2, (0, 0)),
        (0, 4, (3, 1)),
        (3, 4, (2, 0)),
        (2, 5, (1, 3)),
    ],
)
def test_neighbours(rank, size, expected):
    assert neighbours(rank, size) == expected


@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_neighbours_form_one_ring(size):
    # Following dest from rank 0 visits every rank once and comes back;
    # each rank's source is the rank that sends to it.
    seen, rank = [], 0
    for _ in range(size):
        seen.append(rank)
        _, dest = neighbours(rank, size)
        assert neighbours(dest, size)[0] == rank
        rank = dest
    assert rank == 0
    assert sorted(seen) == list(range(size))


def test_expected_message():
    assert expected_message(1) == "P0"
    assert expected_message(4) == "P0P1P2P3"
    assert expected_message(11).endswith("P9P10")


def test_parser_defaults():
    args = build_parser().parse_args([])
    assert (args.rounds, args.size, args.sweep, args.pickle) == (None, None, None, False)
    assert (args.repeat, args.warmup, args.json, args.quiet) == (5, None, False, False)


def test_parser_options():
    args = build_parser().parse_args(
        ["-r", "7", "-s", "4K", "-p", "--repeat", "2", "--warmup", "0", "--json", "-q"]
    )
    assert (args.rounds, args.size, args.pickle) == (7, 4096, True)
    assert (args.repeat, args.warmup, args.json, args.quiet) == (2, 0, True, True)
    assert build_parser().parse_args(["--sweep", "1:4"]).sweep == [1, 2, 4]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--rounds", "0"], "must be between 1 and 100000000, not 0"),
        (["--rounds", "-3"], "must be between 1 and 100000000, not -3"),
        (["--rounds", "99999999999999999999"], "must be between 1 and 100000000, not 9999"),
        (["--rounds", "many"], "invalid integer 'many'"),
        (["--size", "0"], "at least 1 byte"),
        (["--size", "4Q"], "invalid size '4Q'"),
        (["--sweep", "4M:1K"], "MIN is larger than MAX"),
        (["--repeat", "0"], "must be between 1 and 10000, not 0"),
        (["--repeat", "100000"], "must be between 1 and 10000, not 100000"),
        (["--warmup", "-1"], "must be between 0 and 100000000, not -1"),
    ],
)
def test_parser_errors_raise_usage_error(argv, match):
    with pytest.raises(UsageError, match=match) as info:
        build_parser().parse_args(argv)
    assert str(info.value).endswith("(see python -m ringmpi.ring --help)")
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--pickle"], "--pickle needs --size or --sweep"),
        (["--size", "1K", "--sweep", "1:4"], "either --size or --sweep"),
    ],
)
def test_main_usage_errors(argv, match, capsys):
    with pytest.raises(UsageError, match=match):
        main(argv)
    assert capsys.readouterr() == ("", "")


def test_main_default_ring_of_one(capsys):
    assert main([]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"I am rank 0 of 1 on node {socket.gethostname()}",
        'Processor 0 received message "P0" from rank 0',
    ]


def test_main_quiet_prints_only_the_message(capsys):
    assert main(["-q"]) == 0
    assert capsys.readouterr().out == "P0\n"


def test_main_rounds_prints_a_table(capsys):
    assert main(["--rounds", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        f"I am rank 0 of 1 on node {socket.gethostname()}",
        'Processor 0 received message "P0" from rank 0',
    ]
    assert lines[2].startswith("# ring of 1 rank on 1 host: pickled message, 20 rounds")
    assert lines[3].startswith("#") and "bandwidth [MB/s]" in lines[3]
    assert len(lines) == 5 and lines[4].split()[0] == "2"  # len("P0") bytes


def test_main_sweep_table(capsys):
    assert main(["--sweep", "1:64", "--rounds", "5", "--repeat", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [line for line in lines if line.startswith("#")]
    rows = [line for line in lines if not line.startswith("#")]
    assert header[0] == "# ring of 1 rank on 1 host: buffer Send/Recv, 5 rounds x 2 samples"
    assert [int(row.split()[0]) for row in rows] == [1, 2, 4, 8, 16, 32, 64]
    for row in rows:
        size, mean, pm, _, best, bandwidth = row.split()
        assert pm == "±"
        assert float(best) <= float(mean)
        assert float(bandwidth) == pytest.approx(int(size) / float(best), rel=0.01, abs=0.01)


def test_main_quiet_table_has_no_header(capsys):
    assert main(["--size", "1K", "--rounds", "5", "--pickle", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].split()[0] == "1024"


def test_main_json(capsys):
    assert main(["--json", "--sweep", "1K:4K", "--rounds", "5", "--repeat", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["program"] == "ring"
    assert (report["ranks"], report["mode"], report["rounds"], report["repeat"]) == (
        1,
        "buffer",
        5,
        3,
    )
    assert report["hosts"] == [socket.gethostname()]
    assert [t["size"] for t in report["timings"]] == [1024, 2048, 4096]
    for timing in report["timings"]:
        assert len(timing["hop_us"]) == 3 and timing["hops"] == 1
        assert timing["hop_us_min"] == min(timing["hop_us"])


def test_main_json_message(capsys):
    assert main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["mode"], report["message"], report["timings"]) == ("message", "P0", [])


def test_main_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m ringmpi.ring")
    for option in ("--rounds", "--size", "--sweep", "--pickle", "--json", "--quiet"):
        assert option in out
    # Values are named for what they are, not after the option.
    assert "--repeat N" in out and "--warmup N" in out
    assert "REPEAT" not in out and "WARMUP" not in out


def test_main_reports_a_wrong_message(monkeypatch):
    monkeypatch.setattr(ring, "pass_message", lambda comm, rounds: "P0P7")
    with pytest.raises(ring.RingError, match="received 'P0P7' from rank 0, expected 'P0'"):
        main([])


def test_a_sweep_prints_each_row_as_it_is_measured(monkeypatch, capsys):
    from ringmpi.ring import _ring as ring

    real = ring.time_ring
    seen = []

    def timed(comm, nbytes, *args):
        # When a size is about to be timed, the row of the size before is out.
        seen.append(sum(1 for line in capsys.readouterr().out.splitlines() if line[:1] == " "))
        return real(comm, nbytes, *args)

    monkeypatch.setattr(ring, "time_ring", timed)
    assert main(["--sweep", "1:8", "-r", "5", "--repeat", "1"]) == 0
    assert seen == [0, 1, 1, 1]


def test_the_payload_is_checked_piece_by_piece():
    from ringmpi.ring import _buffers as buffers

    payload = buffers.pattern(3 * buffers.CHECK_PIECE + 7)
    assert buffers.intact(payload)
    assert payload[buffers.CHECK_PIECE + 5] == (buffers.CHECK_PIECE + 5) % 251
    payload[2 * buffers.CHECK_PIECE + 3] ^= 1
    assert not buffers.intact(payload)


def test_large_buffers_travel_as_one_derived_datatype():
    from mpi4py import MPI

    from ringmpi.base import limits as buffers

    small = np.zeros(10, np.uint8)
    assert buffers.buffer_spec(small) == ([small, MPI.BYTE], None)
    # A view that claims 2 GiB + 3 bytes without allocating them.
    big = np.lib.stride_tricks.as_strided(small, shape=(buffers.MAX_COUNT + 4,), strides=(0,))
    spec, dtype = buffers.buffer_spec(big)
    try:
        assert spec[1] == 1 and dtype.Get_size() == buffers.MAX_COUNT + 4
    finally:
        dtype.Free()


def test_pickled_messages_past_2_gib_are_refused_at_once():
    with pytest.raises(UsageError, match=r"--pickle sends at most 2147483647 bytes"):
        main(["--pickle", "--size", "3G"])


def test_without_rounds_large_buffers_make_fewer_trips(monkeypatch, capsys):
    # A sample moves about SAMPLE_BYTES a hop: here 8 KiB, so 1K..4K make
    # 8, 4 and 2 trips, and small sizes keep the default 1000 (capped).
    monkeypatch.setattr(ring, "SAMPLE_BYTES", 8 * 1024)
    assert main(["--json", "--sweep", "1K:4K", "--repeat", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(t["size"], t["rounds"]) for t in report["timings"]] == [
        (1024, 8),
        (2048, 4),
        (4096, 2),
    ]
    monkeypatch.setattr(ring, "SAMPLE_BYTES", 1 << 30)
    assert main(["--sweep", "1:2M", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "1000 rounds (fewer above 1 MiB) x 1 sample" in out.splitlines()[0]
    # --rounds is taken as given, at every size.
    assert main(["--json", "--sweep", "1K:4K", "--rounds", "3", "--repeat", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [t["rounds"] for t in report["timings"]] == [3, 3, 3]
