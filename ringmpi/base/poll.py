"""Waiting for messages without burning a core.

Open MPI's blocking receive spins: an idle rank holds a whole core, which on
a small node is a core taken from the ranks doing the work. These helpers
poll instead, spinning for a moment after each message (so a quick reply is
caught at once) and then sleeping in growing steps up to a cap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import config


class Backoff:
    """Spin briefly, then sleep in growing steps up to ``cap`` seconds.

    Args:
        cap: The longest sleep (default ``RINGMPI_POLL_MAX_SLEEP``, 1 ms).
        spin: How long to poll without sleeping after ``reset``.
        first: The first sleep.
        growth: Each sleep is this many times the last (default 2); a smaller
            factor wakes closer to a reply that comes after a while.
        sleep: Called to sleep, with the seconds (default ``time.sleep``); a
            thread that also waits for work from other threads passes a
            sleep that they can cut short.
    """

    def __init__(
        self,
        cap: float | None = None,
        spin: float = 2e-4,
        first: float = 5e-5,
        sleep: Callable[[float], Any] = time.sleep,
        growth: float = 2.0,
    ):
        self.cap = config.poll_max_sleep() if cap is None else cap
        self.growth = growth
        self.spin = spin
        self.first = min(first, self.cap)
        self.sleep = sleep
        self.reset()

    def reset(self) -> None:
        """Start again from spinning; call when something happened."""
        self._idle_since: float | None = None
        self._sleep = self.first

    def pause(self) -> bool:
        """Wait a little before the next poll.

        Returns:
            True if it slept; the caller should then poll twice, since the
            first probe after time away from MPI can miss a message that has
            already arrived.
        """
        now = time.perf_counter()
        if self._idle_since is None:
            self._idle_since = now
        if now - self._idle_since < self.spin:
            return False
        self.sleep(self._sleep)
        self._sleep = min(self._sleep * self.growth, self.cap)
        return True


def improbe(comm, source: int, tag: int, status=None, backoff: Backoff | None = None):
    """Probe once for a matching message, pausing first if nothing is there.

    Returns:
        The matched ``MPI.Message``, or None if none came within one pause.
    """
    message = comm.improbe(source, tag, status)
    if message is None and backoff is not None and backoff.pause():
        # The first probe after time away from MPI can miss a message that
        # has already arrived: probe again.
        message = comm.improbe(source, tag, status)
    return message


def probe(comm, source: int, tag: int, status=None, backoff: Backoff | None = None):
    """Wait for a matching message and return it as an ``MPI.Message``.

    Args:
        comm: The communicator.
        source: Rank to receive from, or ``MPI.ANY_SOURCE``.
        tag: Tag to match, or ``MPI.ANY_TAG``.
        status: Filled in with the message's source and tag.
        backoff: The waiting policy (default a new ``Backoff``).

    Returns:
        The matched message; call ``.recv()`` on it.
    """
    backoff = backoff or Backoff()
    while (message := improbe(comm, source, tag, status, backoff)) is None:
        pass
    backoff.reset()
    return message


def recv(comm, source: int, tag: int, status=None, backoff: Backoff | None = None) -> Any:
    """Receive a pickled object like ``comm.recv``, without spinning."""
    return probe(comm, source, tag, status, backoff).recv()


def wait(request, backoff: Backoff | None = None, timeout: float | None = None) -> bool:
    """Complete an MPI request like ``request.Wait()``, without spinning.

    Returns:
        True once it completed; False if ``timeout`` seconds passed first.
    """
    backoff = backoff or Backoff()
    deadline = None if timeout is None else time.monotonic() + timeout
    while not request.Test():
        if deadline is not None and time.monotonic() > deadline:
            return False
        backoff.pause()
    return True


def barrier(comm, backoff: Backoff | None = None) -> None:
    """Synchronise like ``comm.Barrier()``, without spinning."""
    wait(comm.Ibarrier(), backoff)
