"""``python -m ringmpi.ring``."""

from __future__ import annotations

import sys

from ..harness import launch
from ._ring import build_parser, main

if __name__ == "__main__":
    sys.exit(launch(main, parser=build_parser))
