"""``python -m ringmpi.ring``: the rank/size ring, grown into a latency and bandwidth tool.

The program is :mod:`._ring` (its command line and ``main``); the timed
buffers around the ring, sizes and payload checks are :mod:`._buffers`.
"""

from __future__ import annotations

from ._buffers import RingError, Timing, neighbours, parse_size, parse_sweep, time_ring
from ._ring import PROG, build_parser, expected_message, main, pass_message

__all__ = [
    "PROG",
    "RingError",
    "Timing",
    "build_parser",
    "expected_message",
    "main",
    "neighbours",
    "parse_size",
    "parse_sweep",
    "pass_message",
    "time_ring",
]
