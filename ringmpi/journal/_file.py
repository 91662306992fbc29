"""The journal's SQLite file: made, written, synced and closed off the run's path.

A :class:`Writer` thread does all of it, so the run never waits on the disk:
it makes a new journal without ``fsync`` (SQLite needs seven to make a WAL
database) and then syncs the file and its folder once, before its first
commit; it commits whatever has arrived in one transaction; and it closes
the file at the end (SQLite then copies the log into the database, with two
``fsync`` calls). A process killed while the journal is made leaves one that
SQLite opens as it was at its last commit, never half of one. The process
waits for a closed writer before it exits, and opening the same journal
again waits for it first. The tables: :mod:`._format`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from typing import Any

from . import _format as journalformat

#: The longest full path SQLite opens (its SQLITE_MAX_PATHNAME, less room
#: for the "-wal" and "-shm" beside it).
MAX_PATH = 500

#: Bytes of a database page in a new journal (SQLite's largest).
PAGE_SIZE = 65536

#: journal path -> its writer in this process, until it has ended
_writers: dict[str, Writer] = {}


def connect(path: str, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open ``path`` in WAL mode, committing without ``fsync`` by default."""
    # Written and closed by the Writer thread; never used by two at once.
    db = sqlite3.connect(path, isolation_level=None, timeout=0.5, check_same_thread=False)
    # Large pages for a new file (an existing one keeps its own): a result of
    # 100 MiB is 1,600 pages to write and link rather than 25,600.
    db.execute(f"PRAGMA page_size={PAGE_SIZE}")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA journal_mode=WAL")
    return db


def _fsync(path: str, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create(path: str, meta: Iterable[tuple[str, str]]) -> sqlite3.Connection:
    """Make a new journal at ``path`` holding the ``meta`` rows, and sync it.

    Raises:
        OSError: The file cannot be made.
        sqlite3.Error: SQLite cannot make it.
    """
    db = connect(path, synchronous="OFF")
    try:
        db.execute("BEGIN")
        journalformat.make_tables(db)
        db.executemany("INSERT INTO meta VALUES (?, ?)", list(meta))
        journalformat.add_view(db)
        db.execute("COMMIT")
        db.execute("PRAGMA synchronous=NORMAL")
        with contextlib.suppress(OSError):  # a folder some file systems cannot sync
            _fsync(path, os.O_RDWR)
            _fsync(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        db.close()
        raise
    return db


Batch = tuple[list[tuple[Any, ...]], int]


class Writer:
    """Commits rows in a thread of its own, so the run never waits on the disk.

    Given ``meta`` rather than ``db``, it first makes a new journal at
    ``path`` (see :func:`create`). It commits at most once every
    :attr:`INTERVAL` seconds, all that arrived since in one transaction (a
    commit costs the root ~0.1–0.2 ms of CPU whatever it holds, so a steady
    stream of results costs at most ~0.3 % of a core in commits), and at once when
    asked to :meth:`flush` or :meth:`close`. When the writer ends it closes
    the database and then the ``lock`` descriptor.
    """

    #: Seconds between commits, at least: the results a root killed outright
    #: can lose (a resumed run computes them again).
    INTERVAL = 0.05
    #: Batches waiting, at most: a root that outruns the disk waits for it.
    LIMIT = 64
    #: Bytes of results waiting, at most (beyond the batch being put): large
    #: results wait for the disk rather than pile up in the root's memory.
    MAX_BYTES = 128 * 2**20

    def __init__(
        self,
        path: str,
        db: sqlite3.Connection | None,
        lock: int,
        meta: Iterable[tuple[str, str]] = (),
    ):
        self.path = path
        self.db = db
        self.lock = lock
        self.meta = list(meta)
        #: rows committed so far whose outcome is a result
        self.committed_ok = 0
        #: what stopped the writing, raised by put and flush
        self.error: Exception | None = None
        self._cond = threading.Condition()
        self._pending: list[Batch] = []
        self._queued = self._taken = 0  # batches put, batches committed (or dropped)
        self._bytes = 0  # of the results in the batches waiting
        self._hurry = self._closed = self._ended = False
        # A daemon, so a root that fails before close cannot hang at exit;
        # _wait_all (atexit) closes every writer and lets it finish.
        self.thread = threading.Thread(target=self._run, name="ringmpi-journal", daemon=True)
        _writers[os.path.abspath(path)] = self
        self.thread.start()

    def put(self, rows: list[tuple[Any, ...]], ok: int) -> None:
        """Queue ``rows`` of ``chunks`` (holding ``ok`` results) to be committed."""
        size = sum(_size(row) for row in rows)
        with self._cond:
            while (
                len(self._pending) >= self.LIMIT or self._bytes >= self.MAX_BYTES
            ) and not self._ended:
                self._hurry = self._hurry or self._bytes >= self.MAX_BYTES
                self._cond.notify_all()
                self._cond.wait()
            if self.error is not None:
                raise self.error
            self._pending.append((rows, ok))
            self._queued += 1
            self._bytes += size
            if len(self._pending) in (1, self.LIMIT) or self._bytes >= self.MAX_BYTES:
                self._cond.notify_all()  # else the writer wakes when its interval is up

    def flush(self) -> None:
        """Have everything queued committed now, and wait for it."""
        with self._cond:
            target = self._queued
            self._hurry = True
            self._cond.notify_all()
            while self._taken < target and not self._ended:
                self._cond.wait()
            self._hurry = False
            if self.error is not None:
                raise self.error

    def close(self) -> None:
        """Let the writer commit what is queued, close the file and end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _next(self, last: float) -> tuple[list[Batch], bool]:
        """Wait for batches to commit, and for the interval after the
        ``last`` commit; return them and whether the writer was closed."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            due = last + self.INTERVAL
            while (
                not (self._hurry or self._closed)
                and len(self._pending) < self.LIMIT
                and self._bytes < self.MAX_BYTES
            ):
                left = due - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            work, self._pending = self._pending, []
            return work, self._closed

    def _done_with(self, work: list[Batch]) -> None:
        with self._cond:
            self._taken += len(work)
            self._bytes -= sum(_size(row) for rows, _ in work for row in rows)
            if self._bytes < self.MAX_BYTES and self._queued == self._taken:
                self._hurry = False
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            if self.db is None:
                try:
                    self.db = create(self.path, self.meta)
                except (OSError, sqlite3.Error) as exc:
                    self.error = exc
            last = -self.INTERVAL
            while True:
                work, closed = self._next(last)
                if not work and closed:
                    break
                try:
                    if self.error is None:
                        self._commit(work)
                except Exception as exc:
                    self.error = exc
                last = time.monotonic()
                self._done_with(work)
                # Not held while waiting for the next: counted as gone.
                del work
        finally:
            with self._cond:
                if self.error is None and self._taken < self._queued:
                    self.error = RuntimeError("the journal's writer ended early")
                self._ended = True
                self._cond.notify_all()
            try:
                if self.db is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.close()
            finally:
                os.close(self.lock)

    def _commit(self, work: list[Batch]) -> None:
        # One transaction: all of it is in the file, or none of it.
        db = self.db
        assert db is not None
        db.execute("BEGIN")
        try:
            for rows, _ in work:
                db.executemany(journalformat.INSERT, rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self.committed_ok += sum(ok for _, ok in work)


def _size(row: tuple[Any, ...]) -> int:
    """Bytes of the results in a ``chunks`` row (its last column)."""
    blob = row[-1]
    return len(blob) if isinstance(blob, (bytes, bytearray, memoryview)) else 0


def wait_closed(path: str) -> None:
    """Wait until this process has closed the journal at ``path``, if it
    was closing it (one still open is left to its owner)."""
    writer = _writers.get(os.path.abspath(path))
    if writer is not None and writer.closed:
        writer.thread.join()
        _writers.pop(os.path.abspath(path), None)


@atexit.register
def _wait_all() -> None:
    """At exit, let every writer commit what it holds and close its file
    (one whose journal was never closed too: nothing else will use it)."""
    for writer in list(_writers.values()):
        writer.close()
        writer.thread.join()
    _writers.clear()
