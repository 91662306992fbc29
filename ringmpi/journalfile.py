"""The journal's SQLite file: made, written, synced and closed off the run's path.

A new journal is built at ``PATH-new`` without ``fsync`` and renamed into
place; a thread then syncs it while the run starts, and the writer waits
for that. So a new journal costs the run no ``fsync`` (SQLite needs seven to
make a WAL database), and a crash before the rename leaves no journal, never
half of one. Rows are committed by a writer thread (:class:`Writer`), which
also closes the file at the end (SQLite then copies the log into the
database, with two ``fsync`` calls). The process waits for a closed writer
before it exits, and opening the same journal again waits for it first.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Iterable
from typing import Any

#: journal path -> the thread closing it
_closing: dict[str, threading.Thread] = {}


def connect(path: str, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open ``path`` in WAL mode, committing without ``fsync`` by default."""
    # Written and closed by the Writer thread; never used by two at once.
    db = sqlite3.connect(path, isolation_level=None, timeout=0.5, check_same_thread=False)
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA journal_mode=WAL")
    return db


def _fsync(path: str, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create(path: str, schema: str, meta: Iterable[tuple[str, str]]) -> threading.Thread:
    """Make a new journal at ``path`` with ``schema`` and the ``meta`` rows.

    Returns:
        The started thread that syncs the file and its folder; join it before
        the first write.

    Raises:
        OSError: The file cannot be made.
        sqlite3.Error: SQLite cannot make it.
    """
    new = path + "-new"
    for leftover in (new, new + "-wal", new + "-shm", new + "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
    db = connect(new, synchronous="OFF")
    try:
        db.executescript(f"BEGIN; {schema}")
        db.executemany("INSERT INTO meta VALUES (?, ?)", list(meta))
        db.execute("COMMIT")
    finally:
        db.close()
    os.replace(new, path)

    def sync() -> None:
        with contextlib.suppress(OSError):  # then SQLite's own syncs report it
            _fsync(path, os.O_RDWR)
            _fsync(os.path.dirname(os.path.abspath(path)))

    syncing = threading.Thread(target=sync, name="ringmpi-journal-sync")
    syncing.start()
    return syncing


class Writer:
    """Commits rows in a thread of its own, so the run never waits on the disk.

    Batches queued while a commit runs go into the next transaction
    together. When the writer ends (see :meth:`close`) it closes the database
    and then the ``lock`` descriptor.
    """

    def __init__(
        self, path: str, db: sqlite3.Connection, lock: int, syncing: threading.Thread | None
    ):
        self.db = db
        self.lock = lock
        self.syncing = syncing
        #: rows committed so far whose outcome is a result
        self.committed_ok = 0
        #: what stopped the writing, raised by put and flush
        self.error: Exception | None = None
        # Bounded: a root that outruns the disk waits rather than piling up results.
        self._queue: queue.Queue[tuple[list[tuple[Any, ...]], int] | None] = queue.Queue(64)
        # A daemon, so a root that fails before close cannot hang at exit;
        # _wait_all (atexit) lets every closed writer finish.
        self.thread = threading.Thread(target=self._run, name="ringmpi-journal", daemon=True)
        _closing[os.path.abspath(path)] = self.thread
        self.thread.start()

    def put(self, rows: list[tuple[Any, ...]], ok: int) -> None:
        """Queue ``rows`` (``ok`` of them results) for one transaction."""
        if self.error is not None:
            raise self.error
        self._queue.put((rows, ok))

    def flush(self) -> None:
        """Wait until every queued row is committed."""
        self._queue.join()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Let the writer commit what is queued, close the file and end."""
        self._queue.put(None)

    def _run(self) -> None:
        try:
            if self.syncing is not None:
                self.syncing.join()
            done = False
            while not done:
                batches = [self._queue.get()]
                with contextlib.suppress(queue.Empty):
                    while batches[-1] is not None:
                        batches.append(self._queue.get_nowait())
                done = batches[-1] is None
                work = [batch for batch in batches if batch is not None]
                try:
                    if work and self.error is None:
                        self._commit(work)
                except Exception as exc:
                    self.error = exc
                finally:
                    for _ in batches:
                        self._queue.task_done()
        finally:
            try:
                with contextlib.suppress(sqlite3.Error):
                    self.db.close()
            finally:
                os.close(self.lock)

    def _commit(self, work: list[tuple[list[tuple[Any, ...]], int]]) -> None:
        # One transaction: all of it is in the file, or none of it.
        self.db.execute("BEGIN")
        try:
            for rows, _ in work:
                self.db.executemany(
                    "INSERT OR REPLACE INTO attempts VALUES (?,?,?,?,?,?,?,?,?,?)", rows
                )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        self.committed_ok += sum(ok for _, ok in work)


def wait_closed(path: str) -> None:
    """Wait until this process has closed the journal at ``path``."""
    pending = _closing.pop(os.path.abspath(path), None)
    if pending is not None:
        pending.join()


@atexit.register
def _wait_all() -> None:
    for path in list(_closing):
        wait_closed(path)
