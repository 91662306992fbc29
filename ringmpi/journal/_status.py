"""What a run journal holds, read without a lock and without MPI (``--status``)."""

from __future__ import annotations

import heapq
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import _format as journalformat
from ._journal import Identity, JournalError, describe


@dataclass
class Summary:
    """What a journal holds, for ``status``."""

    identity: Identity
    done: int
    failed: int
    attempts: int
    slowest: list[tuple[int, str, float, str]] = field(default_factory=list)
    errors: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return self.identity.tasks - self.done - self.failed


def summarize(path: str, slowest: int = 5) -> Summary:
    """Read what the journal at ``path`` holds; needs no lock and no MPI.

    Raises:
        JournalError: There is no journal there, or it cannot be read.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise JournalError(f"no journal at {path}")
    try:
        db = _open_read_only(path)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            identity = Identity(
                meta["function"],
                int(meta["tasks"]),
                meta["tasks_sha256"],
                meta.get("options", "{}"),
            )
            summary = _summary(identity, journalformat.read_attempts(db, results=False), slowest)
        finally:
            db.close()
    except (sqlite3.Error, KeyError, ValueError, TypeError) as exc:
        raise JournalError(f"{path} is not a usable journal: {describe(exc)}") from None
    return summary


def _open_read_only(path: str) -> sqlite3.Connection:
    """Open the journal at ``path`` to read, without a lock.

    In a folder this user cannot write, SQLite cannot make the index of the
    write-ahead log: the file is then read as it is, without what a run has
    written to the log and not yet copied into it (a run copies it when it
    closes the journal).
    """
    uri = Path(path).absolute().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=2.0)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
        if os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
            raise
    return sqlite3.connect(f"{uri}?immutable=1", uri=True)


def _summary(
    identity: Identity, attempts: Iterable[journalformat.Attempt], slowest: int
) -> Summary:
    ok: set[int] = set()
    last: dict[int, journalformat.Attempt] = {}  # the latest attempt of each task
    count = 0
    times = []
    for entry in attempts:
        if entry.idx >= identity.tasks:
            continue  # left by a --force-resume with fewer tasks
        count += 1
        if entry.ok:
            ok.add(entry.idx)
            if entry.start is not None and entry.end is not None:
                where = f"{entry.rank}@{entry.host}"
                times.append((entry.end - entry.start, entry.idx, entry.task, where))
        if entry.attempt >= last.get(entry.idx, entry).attempt:
            last[entry.idx] = entry
    slow = [(idx, task, took, where) for took, idx, task, where in heapq.nlargest(slowest, times)]
    failed = sorted(idx for idx in last if idx not in ok)
    errors = [(idx, last[idx].task, last[idx].error or "") for idx in failed[:slowest]]
    return Summary(identity, len(ok), len(failed), count, slow, errors)
