"""``python -m ringmpi``: list the programs and the MPI they would use."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
