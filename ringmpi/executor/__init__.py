"""The farm behind the interfaces code is already written against.

:class:`FarmExecutor` is a :class:`concurrent.futures.Executor`
(:mod:`._executor`), :class:`FarmPool` has :class:`multiprocessing.pool.Pool`'s
methods (:mod:`._pool`). Both stand on the farm's seam
:mod:`ringmpi.farm.service` and no deeper. Under ``python -m ringmpi.run``
a script creates them on the root alone (:mod:`._hosted`).
"""

from __future__ import annotations

from ..farm.service import FarmBroken
from ._executor import FarmExecutor
from ._hosted import HostedError, Main, hosting
from ._hosted import serve as serve_hosted
from ._pool import AsyncResult, FarmPool

__all__ = [
    "AsyncResult",
    "FarmBroken",
    "FarmExecutor",
    "FarmPool",
    "HostedError",
    "Main",
    "hosting",
    "serve_hosted",
]
