"""Every FarmPool method on fixed inputs; the root prints the results as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from poolfns import run_calls

from ringmpi import FarmPool

with FarmPool() as pool:
    if pool is not None:
        print(json.dumps(run_calls(pool)), flush=True)
