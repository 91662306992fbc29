"""The run journal: every task's outcome on disk the moment it reaches the root.

A journal is one SQLite database (the standard library's ``sqlite3``) in WAL
mode: a transaction is either wholly in the file or not at all, so a root
killed mid-write (SIGKILL, a lost node) leaves a journal that opens as it was
after its last commit, with no repair. ``synchronous=NORMAL`` keeps a commit
to one ``write`` of the log (no ``fsync``): safe against a crashed process,
not against a machine that loses power.

Tables (see :mod:`._format`):

* ``meta(key, value)``: the run's identity (``function``, ``tasks`` count,
  ``tasks_sha256``, ``options``) and the format ``version`` (2; a journal of
  format 1 is rewritten when it is resumed).
* ``chunks``: one row per report of outcomes (the tasks one worker ran back
  to back since its last report), as it reached the root.
* ``attempts``, a view: one row per attempt of a task: ``idx``, ``attempt``
  (from 1), ``ok``, ``result`` (the pickled value, or the pickled
  ``TaskError``), ``error`` (its one-line summary), ``task`` (a short
  ``repr``), ``rank``, ``host``, ``start`` and ``end`` (seconds since the
  epoch).

A live run holds an exclusive ``flock`` on ``PATH-lock``, released by the
kernel however the process ends, so a second run cannot write into it while
``status`` can still read it.

Making, writing and closing the file: :mod:`._file`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import pickle
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..base.errors import RingmpiError
from . import _file as journalfile
from . import _format as journalformat
from ._format import VERSION


class JournalError(RingmpiError):
    """The journal cannot be used; raised on every rank before any work starts."""

    collective = True


class JournalWriteError(JournalError):
    """A write to the journal failed during the run, on the root alone: the
    root reports it and ends the job (what was committed before stays)."""

    collective = False


#: The opcodes that start a pickled set or frozenset (protocol 4).
_SET_OPCODES = (pickle.EMPTY_SET, pickle.FROZENSET)


class _Canonical(pickle._Pickler):
    """Pickles sets and frozensets with their items sorted (by their own
    canonical pickle), so that their order, which follows the hash seed for
    strings, does not show. The pure-Python pickler: the C one never asks
    ``reducer_override`` about sets."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) in (set, frozenset):
            return type(obj), (sorted(obj, key=canonical_pickle),)
        return NotImplemented


def canonical_pickle(obj: Any) -> bytes:
    """Pickle ``obj`` (protocol 4) to the same bytes in any process.

    The ordinary pickle, unless a set or frozenset is in it: its order follows
    ``PYTHONHASHSEED`` for strings, so it is pickled again with sorted items.
    """
    data = pickle.dumps(obj, protocol=4)
    if not any(opcode in data for opcode in _SET_OPCODES):
        return data
    file = io.BytesIO()
    _Canonical(file, protocol=4).dump(obj)
    return file.getvalue()


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
        digest = hashlib.sha256(canonical_pickle(list(tasks))).hexdigest()
        return cls(name, len(tasks), digest, json.dumps(options or {}, sort_keys=True))

    def describe(self) -> str:
        extra = "" if self.options == "{}" else f", options {self.options}"
        return f"{self.function} over {self.tasks} tasks (sha256 {self.tasks_sha256[:12]}{extra})"


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Journal:
    """An open journal, written on the root only. Use :meth:`open`."""

    def __init__(self, path: str, identity: Identity):
        self.path = path
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
        if path in ("", ":memory:"):  # SQLite would keep it in memory: nothing kept
            raise JournalError(f"the journal must be a file, not {path!r}")
        journalfile.wait_closed(path)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise JournalError(f"cannot create the journal {path}: no folder {folder}")
        if os.path.exists(path) and not os.path.isfile(path):
            raise JournalError(f"cannot use {path} as a journal: it is not a file")
        if len(os.fsencode(os.path.abspath(path))) > journalfile.MAX_PATH:
            raise JournalError(
                f"cannot create the journal {path}: its full path is longer than the "
                f"{journalfile.MAX_PATH} bytes SQLite takes"
            )
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
        db = None
        try:
            journal = cls(path, identity)
            if exists:
                db = journalfile.connect(path)
                _check_stored(db, path, identity, resume, force)
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", _meta(identity))
                db.execute("COMMIT")
                journal._load(db)
            # A new journal is made by the writer, while the run starts.
            journal._writer = journalfile.Writer(path, db, lock, _meta(identity))
        except BaseException as exc:
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            if isinstance(exc, (sqlite3.Error, ValueError, TypeError)):
                raise JournalError(f"{path} is not a usable journal: {describe(exc)}") from None
            if isinstance(exc, OSError):
                raise JournalError(f"cannot create the journal {path}: {exc.strerror}") from None
            raise
        return journal

    def _load(self, db: sqlite3.Connection) -> None:
        """Read the final outcome of each task recorded so far (of a task
        this run has: after ``--force-resume`` with fewer tasks, those past
        the last stay in the file, unused)."""
        final: dict[int, journalformat.Attempt] = {}
        for entry in journalformat.read_attempts(db):
            idx = entry.idx
            if idx >= self.identity.tasks or idx < 0:
                continue
            self.attempts[idx] = max(self.attempts.get(idx, 0), entry.attempt)
            if entry.result is None:
                continue  # nothing to give back (an error that could not be pickled): run it again
            if idx not in final or not final[idx].ok:  # a result stays, whatever came after
                final[idx] = entry
        for idx, entry in final.items():
            assert entry.result is not None  # see above
            try:
                value = pickle.loads(entry.result)
            except Exception as exc:
                raise JournalError(
                    f"{self.path}: the outcome of task {idx} cannot be read back: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            self.previous[idx] = (entry.ok, value)
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

    def record(
        self,
        outcomes: Iterable[journalformat.Outcome],
        rank: int | None,
        host: str | None,
        start: float | None,
    ) -> None:
        """Queue one chunk's outcomes for the writer (see
        :class:`.journalfile.Writer`), each as one more attempt of its task.

        The values are pickled here, before the caller can change them (see
        :func:`.journalformat.encode`).

        Raises:
            JournalWriteError: An earlier write failed.
        """
        row, ok = journalformat.encode(outcomes, self.attempts, rank, host, start)
        if row is None:
            return
        assert self._writer is not None
        try:
            self._writer.put([row], ok)
        except Exception as exc:
            raise self._failed(exc) from None

    def check(self) -> None:
        """Raise the error of a write that failed, if one did.

        Raises:
            JournalWriteError: A write failed.
        """
        if self._writer is not None and self._writer.error is not None:
            raise self._failed(self._writer.error)

    def _failed(self, exc: BaseException) -> JournalWriteError:
        if self._writer is not None and self._writer.db is None:
            return JournalWriteError(f"cannot create the journal {self.path}: {describe(exc)}")
        done = self.done_before + (self._writer.committed_ok if self._writer else 0)
        return JournalWriteError(
            f"cannot write the journal {self.path}: {describe(exc)} ({done} results are "
            "in it; rerun with --resume once it can be written)"
        )

    def close(self) -> None:
        """Close the journal: the writer commits what is queued and closes
        the file in its thread.

        Raises:
            JournalWriteError: A write failed, so some rows are not in the file.
        """
        writer = self._writer
        if writer is None:
            return
        try:
            writer.flush()
        except Exception as exc:
            raise self._failed(exc) from None
        finally:
            self._writer = None
            writer.close()


def _check_stored(
    db: sqlite3.Connection, path: str, identity: Identity, resume: bool, force: bool
) -> None:
    """Check that the journal at ``path`` may be resumed as ``identity``;
    then bring its tables up to this format."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if tables - {"meta", "chunks", "attempts"}:
        raise JournalError(f"{path} is an SQLite database but not a ringmpi journal")
    stored = dict(db.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
    written = stored.get("version", str(VERSION))
    if not written.isdigit() or int(written) < 1:
        raise JournalError(f"{path} is not a usable journal: its format is {written!r}")
    version = int(written)
    if version > VERSION:
        raise JournalError(
            f"{path} was written by a newer ringmpi (journal format {version}, this one "
            f"reads up to {VERSION}): resume it with that version"
        )
    if stored and not resume:
        raise JournalError(
            f"{path} already holds a journal ({_done(db)} of {stored.get('tasks')} "
            "tasks done): resume it (--resume) or remove it"
        )
    if not stored:
        rows = bool(tables & {"chunks", "attempts"})
        if rows and next(journalformat.read_attempts(db), None) is not None:
            raise JournalError(f"{path} is not a usable journal: it has no identity")
    else:
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
    if "attempts" in tables:
        journalformat.upgrade(db)
    db.execute("BEGIN IMMEDIATE")
    journalformat.make_tables(db)
    journalformat.add_view(db)
    db.execute("COMMIT")


def _done(db: sqlite3.Connection) -> int:
    return len({e.idx for e in journalformat.read_attempts(db, results=False) if e.ok})


def _meta(identity: Identity) -> list[tuple[str, str]]:
    return [
        ("version", str(VERSION)),
        ("function", identity.function),
        ("tasks", str(identity.tasks)),
        ("tasks_sha256", identity.tasks_sha256),
        ("options", identity.options),
    ]
