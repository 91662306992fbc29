"""``python -m ringmpi.run``."""

from __future__ import annotations

import sys

from ._run import cli

if __name__ == "__main__":
    sys.exit(cli())
