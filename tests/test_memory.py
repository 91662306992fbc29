"""Memory sizes and the per-task memory limit: without MPI, then under mpiexec."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ringmpi.base.memory import format_size, held, limited, parse_size
from ringmpi.farm._memory import Limited, check_limit, room_problem


@pytest.mark.parametrize(
    ("text", "size"),
    [("512M", 512 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29), ("64k", 64 << 10),
     ("100", 100), (4096, 4096), (" 3 MB ", 3 << 20)],
)  # fmt: skip
def test_sizes_are_read_in_powers_of_1024(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "12X", "-1G", "0", 0, -5, True, "1e9", "9" * 100000])
def test_what_is_not_a_size_is_one_short_message(text):
    with pytest.raises(ValueError) as caught:
        parse_size(text)
    assert len(str(caught.value)) < 120


def test_sizes_are_shown_the_short_way():
    assert [format_size(s) for s in (1 << 30, 512 << 20, 3 << 29, 100)] == [
        "1 GiB", "512 MiB", "1.5 GiB", "100 B",
    ]  # fmt: skip


def test_the_limit_holds_inside_and_is_lifted_after():
    import numpy as np

    here = held()
    assert here is not None and here > 0
    with pytest.raises(MemoryError), limited(here + (64 << 20)):
        np.ones((256 << 20) // 8)
    assert np.ones((256 << 20) // 8).nbytes == 256 << 20  # lifted


def _grab(megabytes):
    import numpy as np

    return int(np.ones((megabytes << 20) // 8).sum())


def test_a_limited_function_names_the_limit_and_keeps_the_tasks_error_as_cause():
    limit = (held() or 0) + (64 << 20)
    fn = Limited(_grab, limit)
    assert fn(1) == (1 << 20) // 8
    with pytest.raises(MemoryError, match=f"past the memory limit of {format_size(limit)}") as e:
        fn(512)
    assert isinstance(e.value.__cause__, MemoryError)
    assert fn.__qualname__ == "_grab"


def test_limits_leave_room_for_a_task_or_are_refused():
    assert check_limit(None) is None and check_limit("1G") == 1 << 30
    with pytest.raises(ValueError, match="memory_limit: not a size"):
        check_limit("lots")
    assert room_problem(1 << 30, [(1, 100 << 20), (2, None)]) is None
    why = room_problem(50 << 20, [(1, 100 << 20), (2, 120 << 20)])
    assert why is not None and "rank 2 already holds 120 MiB" in why


PROGRAM = str(Path(__file__).parent / "programs" / "memory_farm.py")


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize(
    "how", [("farm", "dynamic"), ("farm", "static"), ("executor",), ("pool",)], ids="-".join
)
def test_a_task_past_the_limit_fails_alone_and_named_while_39_succeed(mpirun, n, how):
    args = [PROGRAM, *how] if how[0] == "farm" else ["-m", "ringmpi.run", PROGRAM, *how]
    result = mpirun(n, *args, timeout=120).check(0)
    lines = [line for line in result.stdout_lines if line.startswith("{")]
    assert len(lines) == 1, result.describe()
    outcome = json.loads(lines[0])
    assert outcome["ok"] == 39 and list(outcome["failed"]) == ["3"], result.describe()
    message = outcome["failed"]["3"]
    assert "MemoryError: past the memory limit of 400 MiB" in message
    if how[0] == "farm":  # named as every failed task is, on a worker when there is one
        rank = re.match(r"task 3 \(3\) failed on rank (\d+)@", message)
        assert rank and (int(rank.group(1)) != 0 or n == 1), message
