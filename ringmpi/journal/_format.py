"""How the journal lays out outcomes in SQLite (format 2), and reading them back.

One row of ``chunks`` holds the outcomes of one chunk as it reached the root:

* ``rank``, ``host``: where it ran; ``start``: when its first task started
  (seconds since the epoch);
* ``outcomes``: a JSON array with one ``[idx, attempt, end, size, task]`` per
  task, ``[..., error]`` for a failed one: ``end`` in microseconds after
  ``start``, ``size`` the length of its pickle in ``results`` (0: none),
  ``task`` a short ``repr``, ``error`` the failure's one-line summary;
* ``results``: the pickled values (or ``TaskError``) one after another.

A row per chunk rather than per task, and integers rather than floats in the
JSON, keep the journal's cost on the root near a microsecond a task. The view
``attempts`` shows one row per attempt (``idx, attempt, ok, result, error,
task, rank, host, start, end``) for whoever reads a journal with SQL; it
needs SQLite's JSON and window functions (3.28 and later, as built by most
systems). ringmpi itself reads with :func:`read_attempts`, which needs
neither.

Format 1 (ringmpi 0.1, one row of a table ``attempts`` per attempt) is read
as it is and rewritten by :func:`upgrade` when it is resumed.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

VERSION = 2

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS chunks "
    "(rank INTEGER, host TEXT, start REAL, outcomes TEXT NOT NULL, results BLOB)",
)

_VIEW = """
CREATE VIEW IF NOT EXISTS attempts AS
WITH o AS (
    SELECT c.rowid AS chunk, o.key AS k, c.rank AS rank, c.host AS host,
        c.start AS first, c.results AS results,
        json_extract(o.value, '$[0]') AS idx,
        json_extract(o.value, '$[1]') AS attempt,
        c.start + json_extract(o.value, '$[2]') / 1e6 AS "end",
        json_extract(o.value, '$[3]') AS size,
        json_extract(o.value, '$[4]') AS task,
        json_extract(o.value, '$[5]') AS error
    FROM chunks AS c, json_each(c.outcomes) AS o
)
SELECT idx, attempt, error IS NULL AS ok,
    CASE WHEN size > 0 THEN substr(results, 1 + sum(size) OVER w - size, size) END AS result,
    error, task, rank, host, lag("end", 1, first) OVER w AS start, "end"
FROM o WINDOW w AS (PARTITION BY chunk ORDER BY k)
"""

INSERT = "INSERT INTO chunks VALUES (?, ?, ?, ?, ?)"

# Compact, and without the check for cycles a list of numbers and strings
# cannot have: a third less of the journal's cost on the root.
_to_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode

#: One task's outcome as :func:`encode` takes it: its index, its value, its
#: ``TaskError`` (None for a result), a short ``repr`` of the task, and when
#: it ended (seconds since the epoch, or None).
Outcome = tuple[int, Any, Any, str, "float | None"]


class Attempt(NamedTuple):
    """One attempt of one task, as read back from the journal."""

    idx: int
    attempt: int
    ok: bool
    result: memoryview | None  # the pickled value or TaskError
    error: str | None
    task: str
    rank: int | None
    host: str | None
    start: float | None
    end: float | None


def make_tables(db: sqlite3.Connection) -> None:
    """Make the tables of a journal, where they are not yet."""
    for statement in SCHEMA:
        db.execute(statement)


def add_view(db: sqlite3.Connection) -> None:
    """Add the ``attempts`` view, where this SQLite can make it."""
    with contextlib.suppress(sqlite3.OperationalError):  # no json_each or no windows
        db.execute(_VIEW)


def encode(
    outcomes: Iterable[Outcome],
    attempts: dict[int, int],
    rank: int | None,
    host: str | None,
    start: float | None,
) -> tuple[tuple[Any, ...] | None, int]:
    """Return the ``chunks`` row of one chunk's outcomes and how many are
    results, counting each as one more attempt in ``attempts``.

    Each outcome is ``(index, value, TaskError or None, task repr, end)``. A
    value that cannot be pickled is left out (a resumed run computes it
    again); the row is None when nothing is left.
    """
    entries: list[list[Any]] = []
    blobs: list[bytes] = []
    ok = 0
    dumps, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
    for idx, value, error, task, end in outcomes:
        attempt = attempts[idx] = attempts.get(idx, 0) + 1
        try:
            blob = dumps(value if error is None else error, protocol)
        except Exception:
            if error is None:
                continue
            blob = b""
        after = None if end is None or start is None else round((end - start) * 1e6)
        if error is None:
            entries.append([idx, attempt, after, len(blob), task])
            ok += 1
        else:
            summary = str(getattr(error, "summary", error))
            entries.append([idx, attempt, after, len(blob), task, summary])
        blobs.append(blob)
    if not entries:
        return None, 0
    # One result is stored as it was pickled: joining would copy it.
    results = blobs[0] if len(blobs) == 1 else b"".join(blobs)
    return (rank, host, start, _to_json(entries), results), ok


def read_attempts(db: sqlite3.Connection, results: bool = True) -> Iterator[Attempt]:
    """Yield every attempt in the journal, in the order they were written
    (from a journal of format 1 too).

    Args:
        db: The journal.
        results: Read the pickled results too; without, every ``result`` is
            None and no result body is read from the file (``--status``).

    Raises:
        sqlite3.Error, ValueError, TypeError: The journal is damaged.
    """
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "chunks" not in tables and "attempts" in tables:
        yield from _read_format_1(db, results)
        return
    # length() of a blob is in its row's header: SQLite reads no body for it.
    body = "results" if results else "length(results)"
    rows = db.execute(f"SELECT rank, host, start, outcomes, {body} FROM chunks ORDER BY rowid")
    for rank, host, first, outcomes, stored in rows:
        if not results:
            yield from _entries(rank, host, first, outcomes, None, stored or 0)
            continue
        blob = memoryview(stored) if isinstance(stored, bytes) else memoryview(b"")
        yield from _entries(rank, host, first, outcomes, blob, len(blob))


def _entries(
    rank: Any, host: Any, first: Any, outcomes: str, blob: memoryview | None, length: int
) -> Iterator[Attempt]:
    """The attempts of one ``chunks`` row; ``blob`` None: not read (its ``length`` only)."""
    offset, start = 0, first
    entries = json.loads(outcomes)
    if not isinstance(entries, list):
        raise ValueError(f"a chunk's outcomes are {outcomes!r}, not a list")
    for entry in entries:
        idx, attempt, after, size, task, error = _checked(entry)
        end = None if after is None or first is None else first + after / 1e6
        stored = 0 < size <= length - offset
        result = blob[offset : offset + size] if stored and blob is not None else None
        if error is None and not stored:
            error = "no result was stored"
        yield Attempt(idx, attempt, error is None, result, error, task, rank, host, start, end)
        offset += size
        start = end


def _checked(entry: Any) -> tuple[int, int, int | None, int, str, str | None]:
    """Return the fields of one entry of ``outcomes``, checked.

    Raises:
        ValueError: It is not one this module writes.
    """
    if not isinstance(entry, list) or len(entry) not in (5, 6):
        raise ValueError(f"an outcome is {entry!r}, not [idx, attempt, end, size, task(, error)]")
    idx, attempt, after, size, task = entry[:5]
    error = entry[5] if len(entry) == 6 else None
    ints = (idx, attempt, size) if after is None else (idx, attempt, size, after)
    if not all(type(x) is int for x in ints) or not isinstance(task, str) or size < 0:
        raise ValueError(f"an outcome is {entry!r}, not [idx, attempt, end, size, task(, error)]")
    if error is not None and not isinstance(error, str):
        raise ValueError(f"an outcome's error is {error!r}, not text")
    return idx, attempt, after, size, task, error


def _read_format_1(db: sqlite3.Connection, results: bool = True) -> Iterator[Attempt]:
    body = "result" if results else "length(result)"
    rows = db.execute(
        f'SELECT idx, attempt, ok, {body}, error, task, rank, host, start, "end" '
        "FROM attempts ORDER BY rowid"
    )
    for idx, attempt, ok, result, error, task, rank, host, start, end in rows:
        has = bool(result)
        result = memoryview(result) if has and results else None
        if ok and not has:
            ok, error = False, "no result was stored"
        error = None if ok else (error or "failed")
        yield Attempt(idx, attempt, bool(ok), result, error, task, rank, host, start, end)


def upgrade(db: sqlite3.Connection) -> None:
    """Rewrite a journal of format 1 as format 2 (a chunk per attempt), in
    one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = []
        for a in list(_read_format_1(db)):
            start = a.start if a.start is not None else a.end
            after = None if a.end is None or start is None else round((a.end - start) * 1e6)
            blob = bytes(a.result) if a.result is not None else b""
            entry = [a.idx, a.attempt, after, len(blob), a.task]
            outcomes = json.dumps(entry if a.ok else [*entry, a.error])
            rows.append((a.rank, a.host, start, f"[{outcomes}]", blob))
        db.execute("DROP TABLE attempts")
        make_tables(db)
        db.executemany(INSERT, rows)
        db.execute(f"INSERT OR REPLACE INTO meta VALUES ('version', '{VERSION}')")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
