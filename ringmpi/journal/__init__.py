"""The run journal: every outcome of a farm run in an SQLite file as it arrives, and resume.

:class:`Journal` is written on the root only (:mod:`._journal`); its file is
made, written and closed off the run's path by a writer thread
(:mod:`._file`); its tables (a row per worker report, the ``attempts`` view) and how
they are read back are in :mod:`._format`; :func:`summarize` says what a
journal holds without MPI (``fibfarm --journal PATH --status``).
"""

from __future__ import annotations

from ._format import VERSION, Attempt, read_attempts
from ._journal import Identity, Journal, JournalError, JournalWriteError, describe
from ._status import Summary, summarize

__all__ = [
    "VERSION",
    "Attempt",
    "Identity",
    "Journal",
    "JournalError",
    "JournalWriteError",
    "Summary",
    "describe",
    "read_attempts",
    "summarize",
]
