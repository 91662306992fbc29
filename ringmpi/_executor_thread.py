"""The executor's one MPI thread on the root: hand out queued tasks, take in results.

A mixin of :class:`ringmpi._executor_service.Service`. The thread, started
when the service is created, makes every MPI call of the executor: it moves
the queued tasks to the farm's open dispatcher (:mod:`ringmpi.farm._open`),
takes in results and sets the futures, and at the end releases the workers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from .farm._ft import leave
from .farm._open import Call, OpenDispatcher
from .farm._outcome import FarmStats

log = logging.getLogger("ringmpi.executor")


class RootThread:
    """The root's thread of a :class:`~ringmpi._executor_service.Service`."""

    comm: Any
    ft: bool
    stats: FarmStats
    dispatcher: OpenDispatcher
    _queue: list[tuple[int, Call, Future]]
    _lock: threading.Lock
    _closing: bool
    shut: bool
    broken: BaseException | None
    done: threading.Event

    def _take_queue(self) -> bool:
        with self._lock:
            items, self._queue = self._queue, []
        if items:
            self.dispatcher.add(items)
        return bool(items)

    def _run(self, active: Sequence[int], idle: Sequence[int], root_computes: bool) -> None:
        from mpi4py import MPI

        d = self.dispatcher
        try:
            d.start(active, idle, root_computes)
            while True:
                self._take_queue()
                if self._closing:
                    d.purge_cancelled()
                    with self._lock:
                        empty = not self._queue
                    if empty and not d.busy():
                        break
                d.compute_lost_share()
                for outcomes in d.take_in():
                    d.resolve(outcomes)
            d.close()
            d.drain()
            leave(self.comm, self.ft, failed=bool(self.stats.lost))
            if not self.stats.lost:
                self.comm.Free()
        except BaseException as exc:
            if isinstance(exc, MPI.Exception):
                log.error("the executor's root thread failed: %s", exc)
            with self._lock:
                self.broken = exc
                self.shut = True
                queued = [future for _, _, future in self._queue]
                self._queue = []
            for future in queued:
                future.cancel()
            d.fail_all(exc)
        finally:
            self.done.set()
