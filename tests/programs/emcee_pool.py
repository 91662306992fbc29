"""emcee with FarmPool in schwimmbad's style; the root saves the chain to argv[1]."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from poolfns import emcee_chain

from ringmpi import FarmPool

pool = FarmPool()
if not pool.is_master():
    pool.wait()
    sys.exit(0)
chain, log_prob = emcee_chain(pool)
pool.close()
pool.join()
np.savez(sys.argv[1], chain=chain, log_prob=log_prob)
