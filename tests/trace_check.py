"""Checks of a traced run shared by the tests: spans, and the Chrome trace JSON."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

#: Slack for clocks mapped across ranks and for rounding, in seconds.
SLACK = 2e-3


def check_spans(spans: list[Any], ntasks: int, elapsed: float) -> None:
    """Every task once; a rank's spans never overlap; all within the run."""
    assert sorted(s.index for s in spans) == list(range(ntasks))
    by_rank = defaultdict(list)
    for s in spans:
        assert -SLACK <= s.start <= s.end <= elapsed + SLACK, s
        assert s.dispatched <= s.received + SLACK, s
        by_rank[s.rank].append((s.start, s.end))
    for rank, pairs in by_rank.items():
        pairs.sort()
        for (_, end), (start, _) in zip(pairs, pairs[1:]):
            assert start >= end - SLACK, f"rank {rank}: spans overlap: {pairs}"


def check_chrome_trace(doc: dict[str, Any], ntasks: int, ranks: int, elapsed: float) -> None:
    """The document is Chrome Trace Event format with one span per task."""
    assert set(doc) >= {"traceEvents"}
    events = doc["traceEvents"]
    for event in events:
        assert {"name", "ph", "pid", "tid"} <= set(event), event
        assert event["ph"] in {"M", "X", "i"}, event
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert sorted(names) == list(range(ranks))
    assert all(name.startswith(f"rank {tid}@") for tid, name in names.items())
    spans = [e for e in events if e["ph"] == "X"]
    assert sorted(e["args"]["task"] for e in spans) == list(range(ntasks))
    by_tid = defaultdict(list)
    for e in spans:
        assert isinstance(e["ts"], (int, float)) and isinstance(e["dur"], (int, float)), e
        assert e["ts"] >= -SLACK * 1e6 and e["ts"] + e["dur"] <= (elapsed + SLACK) * 1e6, e
        by_tid[e["tid"]].append((e["ts"], e["ts"] + e["dur"]))
    for tid, pairs in by_tid.items():
        pairs.sort()
        for (_, end), (start, _) in zip(pairs, pairs[1:]):
            assert start >= end - SLACK * 1e6, f"rank {tid}: spans overlap"
