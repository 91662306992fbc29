"""``python -m ringmpi.bench``."""

from __future__ import annotations

import sys

from ..harness import launch
from ._main import main
from ._parser import build_parser

if __name__ == "__main__":
    sys.exit(launch(main, parser=build_parser))
