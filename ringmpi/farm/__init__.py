"""A master/worker task farm for any picklable function.

Every rank of the communicator calls :func:`farm_map` (or :class:`Farm`)
together. The root hands out tasks and gathers the results; the other ranks
serve until told to stop. Results come back in input order.

Start-up (see :mod:`._start`): ``W -> R`` ``Tag.JOIN`` and ``R -> W``
``Tag.GO`` on the caller's communicator (waited for with sleeps, within
``join_timeout``), a duplicate of it, the layout gathered, then ``R -> W``
``Tag.START``: ``(None, trace)``, or an error that every rank raises.

Message protocol (root ``R``, worker ``W``):

* ``R -> W`` ``Tag.SHARED``: ``None``, or the farm's shared data (see
  :mod:`._shared`: arrays once per node in a shared-memory window).
* ``R -> W`` ``Tag.SETUP``: ``(fn, initializer, initargs)``, or ``None`` for a
  worker that is not needed (more ranks than cores or than tasks).
* ``R -> W`` ``Tag.TASK``: a chunk ``[(index, task), ...]``, or ``None``: stop.
* ``W -> R`` ``Tag.RESULT``: ``(outcomes, busy_seconds)`` with one
  ``(index, value, error)`` per task of the chunk.
* ``W -> R`` ``Tag.STOP``: the signal number, when a stop signal reached this
  worker alone (see :mod:`._stop`); the root then stops as if it had it.
* Everyone ends in a barrier, so every rank returns when the farm is done
  (fault tolerant: the survivors agree on whether a rank was lost instead).

Any message may be of any size (see :mod:`._wire`): a small one travels as
one pickled message, a large one as a ``Bulk`` header on its tag followed by
its parts on ``Tag.BULK`` (large numpy arrays out-of-band, without a pickled
copy).

Static schedule: one ``scatter`` of ``(fn, initializer, initargs, chunk)``
per computing rank (``None`` for the others), a non-spinning barrier, and one
``gather`` of ``(outcomes, busy_seconds)``.

Where things live: :mod:`._outcome` (tags, errors, stats), :mod:`._plan`
(which ranks compute, chunking), :mod:`._worker` (the worker's loops),
:mod:`._root` (the root's dispatcher), :mod:`._recover` (its recovery from
lost workers and its deadlines), :mod:`._static` (the static root),
:mod:`._ft` (ULFM), :mod:`._farm` (options and roles), :mod:`._farm_root`
(the root's side of a run).

Waiting never spins (see :mod:`ringmpi.poll`), and the root only hands out as
many tasks at once on a node as the node has cores: on a node with fewer
cores than ranks, the extra ranks stay idle instead of time-slicing the
cores, and the root computes tasks itself when its node has a core to spare.
"""

from __future__ import annotations

from ._farm import Farm, farm_imap_unordered, farm_map
from ._outcome import (
    Errors,
    FarmError,
    FarmStartError,
    FarmStats,
    FarmTimeout,
    LostWorker,
    RemoteTraceback,
    Schedule,
    Tag,
    TaskError,
    WorkerStats,
    call,
    describe_error,
)
from ._plan import balance, make_chunks, plan_workers
from ._shared import shared
from ._start import FarmJoinError, FarmUsageError

__all__ = [
    "Errors",
    "Farm",
    "FarmError",
    "FarmJoinError",
    "FarmStartError",
    "FarmStats",
    "FarmTimeout",
    "FarmUsageError",
    "LostWorker",
    "RemoteTraceback",
    "Schedule",
    "Tag",
    "TaskError",
    "WorkerStats",
    "balance",
    "call",
    "describe_error",
    "farm_imap_unordered",
    "farm_map",
    "make_chunks",
    "plan_workers",
    "shared",
]
