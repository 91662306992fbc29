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
* ``R -> W`` ``Tag.TASK``: a chunk ``[(index, task), ...]`` to queue (a worker
  holds at most two), or ``None``: stop (sent once the worker holds nothing).
* ``R -> W`` ``Tag.TAKE``: task indices to give back if they have not started.
* ``W -> R`` ``Tag.RESULT``: ``(outcomes, busy_seconds)``, a report: a
  ``Batch`` of ``(index, value, error)`` for the tasks that ended since the
  last report (sent every few ms while tasks run, and when the worker runs
  out of work), which task runs now (``running``) and, in answer to a
  ``TAKE``, the tasks given back (``returned``).
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

Where things live: :mod:`._farm` (the :class:`Farm`: options, one run on
every rank, the root's side, the journal and a clean stop), :mod:`._engine`
(the root's one loop of the dynamic schedule, for the farm, the executor and
the pool: handing out, taking back, recovery from lost workers, deadlines),
:mod:`._static` (the static root), :mod:`._worker` (the worker's runner and
mailbox), :mod:`._start` (joining),
:mod:`._options` (option checks), :mod:`._plan` (which ranks compute,
chunking), :mod:`._outcome` (tags, errors, stats), :mod:`._stop` (a clean
stop on a signal), :mod:`._ft` (ULFM), :mod:`._trace` (spans), :mod:`._wire`
(messages of any size), :mod:`._shared` (read-only data once per node).
Two public modules beside the names below: :mod:`.service`, the seam the
executor and the pool are built on, and :mod:`.timeline`, a traced run as
Chrome Trace Event JSON and as a Gantt chart.

Waiting never spins (see :mod:`ringmpi.base.poll`), and the root only hands out as
many tasks at once on a node as the node has cores: on a node with fewer
cores than ranks, the extra ranks stay idle instead of time-slicing the
cores, and the root computes tasks itself when its node has a core to spare.
"""

from __future__ import annotations

from ._engine import FarmSendError
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
    TaskError,
    TaskSpan,
    WorkerStats,
)
from ._plan import balance
from ._shared import shared
from ._start import FarmJoinError, FarmUsageError
from ._stop import FarmStopped

__all__ = [
    "Errors",
    "Farm",
    "FarmError",
    "FarmJoinError",
    "FarmSendError",
    "FarmStartError",
    "FarmStats",
    "FarmStopped",
    "FarmTimeout",
    "FarmUsageError",
    "LostWorker",
    "RemoteTraceback",
    "Schedule",
    "TaskError",
    "TaskSpan",
    "WorkerStats",
    "balance",
    "farm_imap_unordered",
    "farm_map",
    "shared",
]
