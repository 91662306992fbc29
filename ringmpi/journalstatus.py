"""What a run journal holds, read without a lock and without MPI (``--status``)."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field

from .journal import Identity, JournalError, describe


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
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            identity = Identity(
                meta["function"],
                int(meta["tasks"]),
                meta["tasks_sha256"],
                meta.get("options", "{}"),
            )
            finals = db.execute(
                "SELECT idx, max(ok), count(*) FROM attempts GROUP BY idx"
            ).fetchall()
            done = sum(1 for _, ok, _ in finals if ok)
            failed = len(finals) - done
            attempts = sum(n for _, _, n in finals)
            slow = db.execute(
                'SELECT idx, task, "end" - start, rank || "@" || host FROM attempts '
                'WHERE ok AND start IS NOT NULL ORDER BY "end" - start DESC LIMIT ?',
                (slowest,),
            ).fetchall()
            errors = db.execute(
                "SELECT idx, task, error FROM attempts a WHERE NOT ok AND attempt = "
                "(SELECT max(attempt) FROM attempts b WHERE b.idx = a.idx) AND NOT EXISTS "
                "(SELECT 1 FROM attempts c WHERE c.idx = a.idx AND c.ok) ORDER BY idx LIMIT ?",
                (slowest,),
            ).fetchall()
        finally:
            db.close()
    except (sqlite3.Error, KeyError, ValueError) as exc:
        raise JournalError(f"{path} is not a usable journal: {describe(exc)}") from None
    return Summary(identity, done, failed, attempts, slow, errors)
