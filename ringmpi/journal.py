"""The run journal: every task's outcome on disk the moment it reaches the root.

A journal is one SQLite database (the standard library's ``sqlite3``) in WAL
mode: a transaction is either wholly in the file or not at all, so a root
killed mid-write (SIGKILL, a lost node) leaves a journal that opens as it was
after its last commit, with no repair. ``synchronous=NORMAL`` keeps a commit
to one ``write`` of the log (no ``fsync``): safe against a crashed process,
not against a machine that loses power.

Tables:

* ``meta(key, value)``: the run's identity (``function``, ``tasks`` count,
  ``tasks_sha256``, ``options``) and the format ``version``.
* ``attempts``: one row per attempt of a task: ``idx``, ``attempt`` (from 1),
  ``ok``, ``result`` (the pickled value, or the pickled ``TaskError``),
  ``error`` (its one-line summary), ``task`` (a short ``repr``), ``rank``,
  ``host``, ``start`` and ``end`` (seconds since the epoch).

A live run holds an exclusive ``flock`` on ``PATH-lock``, released by the
kernel however the process ends, so a second run cannot write into it while
``status`` can still read it.

Making, syncing and closing the file: :mod:`ringmpi.journalfile`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import pickle
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import journalfile
from .errors import RingmpiError

VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    result BLOB,
    error TEXT,
    task TEXT,
    rank INTEGER,
    host TEXT,
    start REAL,
    "end" REAL,
    PRIMARY KEY (idx, attempt)
);
"""


class JournalError(RingmpiError):
    """The journal cannot be used; raised on every rank before any work starts."""

    collective = True


@dataclass(frozen=True)
class Identity:
    """What makes two runs the same run: a resume must match it.

    Attributes:
        function: The function's module and qualified name.
        tasks: How many tasks.
        tasks_sha256: A hash of the pickled task list.
        options: Options that change results, as a JSON object.
    """

    function: str
    tasks: int
    tasks_sha256: str
    options: str = "{}"

    @classmethod
    def of(cls, fn: Any, tasks: Sequence[Any], options: dict[str, Any] | None = None) -> Identity:
        """Return the identity of running ``fn`` over ``tasks``."""
        module = getattr(fn, "__module__", "?")
        if module == "__main__":  # python -m pkg.mod: name it as imported
            spec = getattr(sys.modules["__main__"], "__spec__", None)
            module = spec.name if spec is not None else module
        name = f"{module}.{getattr(fn, '__qualname__', repr(fn))}"
        digest = hashlib.sha256(pickle.dumps(list(tasks), protocol=4)).hexdigest()
        return cls(name, len(tasks), digest, json.dumps(options or {}, sort_keys=True))

    def describe(self) -> str:
        extra = "" if self.options == "{}" else f", options {self.options}"
        return f"{self.function} over {self.tasks} tasks (sha256 {self.tasks_sha256[:12]}{extra})"


@dataclass
class Row:
    """One attempt of one task, as it goes into the journal."""

    idx: int
    attempt: int
    value: Any
    error: Any  # a TaskError, or None
    task: str
    rank: int | None
    host: str | None
    start: float | None
    end: float | None


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Journal:
    """An open journal, written on the root only. Use :meth:`open`."""

    def __init__(self, path: str, db: sqlite3.Connection, identity: Identity):
        self.path = path
        self.db = db
        self.identity = identity
        #: index -> attempts already recorded
        self.attempts: dict[int, int] = {}
        #: index -> final outcome found at open: (ok, value or TaskError)
        self.previous: dict[int, tuple[bool, Any]] = {}
        #: results the journal held at open
        self.done_before = 0
        self._writer: journalfile.Writer | None = None

    @classmethod
    def open(cls, path: str, identity: Identity, *, resume: bool, force: bool = False) -> Journal:
        """Open (or create) the journal at ``path`` for the run ``identity``.

        Args:
            path: The database file.
            identity: The run about to start.
            resume: Continue the run the journal holds; a missing journal is
                then a fresh start.
            force: Resume even if the journal belongs to another run.

        Raises:
            JournalError: The path cannot be written, another live run holds
                it, it is not a journal, or it belongs to another run.
        """
        path = os.fspath(path)
        journalfile.wait_closed(path)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise JournalError(f"cannot create the journal {path}: no folder {folder}")
        exists = os.path.exists(path) and os.path.getsize(path) > 0
        if not os.access(folder, os.W_OK) or (exists and not os.access(path, os.W_OK)):
            raise JournalError(f"cannot write the journal {path}: read-only")
        try:
            lock = os.open(path + "-lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot lock the journal {path}: {exc.strerror}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(lock)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise JournalError(
                    f"the journal {path} is in use by a live run; wait for it to end"
                ) from None
            raise JournalError(f"cannot lock the journal {path}: {exc.strerror}") from None
        try:
            journal = cls._open_locked(path, identity, lock, exists, resume, force)
        except BaseException:
            os.close(lock)
            raise
        return journal

    @classmethod
    def _open_locked(
        cls, path: str, identity: Identity, lock: int, exists: bool, resume: bool, force: bool
    ) -> Journal:
        syncing = None
        try:
            if not exists:
                syncing = journalfile.create(path, _SCHEMA, _meta(identity))
            db = journalfile.connect(path)
            if exists:
                db.executescript(_SCHEMA)
            stored = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise JournalError(f"{path} is not a usable journal: {describe(exc)}") from None
        except OSError as exc:
            raise JournalError(f"cannot create the journal {path}: {exc.strerror}") from None
        try:
            if exists and not stored:
                count = db.execute("SELECT count(*) FROM attempts").fetchone()[0]
                if count:
                    raise JournalError(f"{path} is not a usable journal: it has no identity")
            if stored and exists:
                if not resume:
                    done = db.execute(
                        "SELECT count(DISTINCT idx) FROM attempts WHERE ok"
                    ).fetchone()
                    raise JournalError(
                        f"{path} already holds a journal ({done[0]} of {stored.get('tasks')} "
                        "tasks done): resume it (--resume) or remove it"
                    )
                old = Identity(
                    stored.get("function", "?"),
                    int(stored.get("tasks", -1)),
                    stored.get("tasks_sha256", "?"),
                    stored.get("options", "{}"),
                )
                if old != identity and not force:
                    raise JournalError(
                        f"{path} is the journal of another run: {old.describe()}, "
                        f"not {identity.describe()} (--force-resume to use it anyway)"
                    )
            if exists:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", _meta(identity))
                if force:
                    db.execute("DELETE FROM attempts WHERE idx >= ?", (identity.tasks,))
                db.execute("COMMIT")
            journal = cls(path, db, identity)
            journal._load()
            journal._writer = journalfile.Writer(path, db, lock, syncing)
        except sqlite3.Error as exc:
            raise JournalError(f"{path} is not a usable journal: {describe(exc)}") from None
        return journal

    def _load(self) -> None:
        """Read the final outcome of each task recorded so far."""
        cursor = self.db.execute(
            "SELECT idx, attempt, ok, result FROM attempts ORDER BY idx, attempt"
        )
        for idx, attempt, ok, blob in cursor:
            self.attempts[idx] = max(self.attempts.get(idx, 0), attempt)
            if self.previous.get(idx, (False, None))[0]:
                continue  # a result stays, whatever came after
            try:
                value = pickle.loads(blob) if blob is not None else None
            except Exception as exc:
                raise JournalError(
                    f"{self.path}: the outcome of task {idx} cannot be read back: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            self.previous[idx] = (bool(ok), value)
        self.done_before = sum(1 for ok, _ in self.previous.values() if ok)

    @property
    def done(self) -> int:
        """Results in the file: those held at open and those written since
        (waits for the rows queued to be written)."""
        if self._writer is None:
            return self.done_before
        with contextlib.suppress(Exception):
            self._writer.flush()
        return self.done_before + self._writer.committed_ok

    def next_attempt(self, idx: int) -> int:
        """Count one more attempt of task ``idx`` and return its number."""
        attempt = self.attempts.get(idx, 0) + 1
        self.attempts[idx] = attempt
        return attempt

    def record(self, rows: Iterable[Row]) -> None:
        """Queue the attempts for one transaction (see :class:`.journalfile.Writer`).

        Raises:
            JournalError: An earlier write failed.
        """
        data = []
        ok_count = 0
        for row in rows:
            ok = row.error is None
            payload = row.value if ok else row.error
            try:
                blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                blob = None
            summary = None if ok else str(getattr(row.error, "summary", row.error))
            data.append(
                (row.idx, row.attempt, int(ok), blob, summary, row.task,
                 row.rank, row.host, row.start, row.end)
            )  # fmt: skip
            ok_count += ok
        assert self._writer is not None
        try:
            self._writer.put(data, ok_count)
        except Exception as exc:
            raise JournalError(f"cannot write the journal {self.path}: {describe(exc)}") from None

    def close(self) -> None:
        """Close the journal: the writer commits what is queued and closes
        the file in its thread.

        Raises:
            JournalError: A write failed, so some rows are not in the file.
        """
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.flush()
        except Exception as exc:
            raise JournalError(f"cannot write the journal {self.path}: {describe(exc)}") from None
        finally:
            writer.close()


def _meta(identity: Identity) -> list[tuple[str, str]]:
    return [
        ("version", str(VERSION)),
        ("function", identity.function),
        ("tasks", str(identity.tasks)),
        ("tasks_sha256", identity.tasks_sha256),
        ("options", identity.options),
    ]
