"""The run journal on its own: made, written from a thread, closed, reopened; no MPI."""

from __future__ import annotations

import os
import sqlite3

import pytest

from ringmpi import journalfile
from ringmpi.journal import Identity, Journal, JournalError, Row
from ringmpi.journalstatus import summarize


def square(x):
    return x * x


def _rows(indices, attempt=1):
    return [Row(i, attempt, i * i, None, repr(i), 1, "host", 0.0, 1.0) for i in indices]


def _stored(path):
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT idx, attempt, ok FROM attempts ORDER BY idx").fetchall()
    finally:
        db.close()


def test_a_new_journal_holds_every_row_written_and_no_file_beside_it(tmp_path):
    path = str(tmp_path / "run.db")
    identity = Identity.of(square, list(range(50)))
    journal = Journal.open(path, identity, resume=False)
    for start in range(0, 50, 10):
        journal.record(_rows(range(start, start + 10)))
    assert journal.done == 50  # waits for the writer
    journal.close()
    # Reopening in the same process waits for the writer to close the file.
    again = Journal.open(path, identity, resume=True)
    assert again.done == 50 and sorted(again.previous) == list(range(50))
    assert again.previous[7] == (True, 49)
    again.close()
    journalfile.wait_closed(path)
    assert _stored(path) == [(i, 1, 1) for i in range(50)]
    leftovers = sorted(name for name in os.listdir(tmp_path) if name != "run.db")
    assert leftovers == ["run.db-lock"], leftovers
    assert summarize(path).done == 50


def test_a_leftover_of_an_interrupted_creation_is_replaced(tmp_path):
    path = str(tmp_path / "run.db")
    (tmp_path / "run.db-new").write_bytes(b"half a journal")
    journal = Journal.open(path, Identity.of(square, [1, 2]), resume=False)
    journal.record(_rows([0, 1]))
    journal.close()
    assert not (tmp_path / "run.db-new").exists()
    assert summarize(path).done == 2


def test_rows_are_committed_while_the_run_goes_on(tmp_path):
    path = str(tmp_path / "run.db")
    journal = Journal.open(path, Identity.of(square, list(range(3))), resume=False)
    journal.record(_rows([0, 1]))
    assert journal.done == 2
    # Another reader sees them before the journal is closed.
    assert summarize(path).done == 2
    journal.close()


def test_a_failed_write_is_one_journal_error_and_nothing_is_counted(tmp_path):
    path = str(tmp_path / "run.db")
    journal = Journal.open(path, Identity.of(square, list(range(4))), resume=False)
    journal.record(_rows([0]))
    assert journal.done == 1
    db = sqlite3.connect(path)  # make the next insert fail
    with db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON attempts BEGIN "
                   "SELECT RAISE(ABORT, 'disk says no'); END")  # fmt: skip
    db.close()
    journal.record(_rows([1]))
    assert journal.done == 1
    with pytest.raises(JournalError, match=r"cannot write the journal .*run\.db: disk says no"):
        journal.record(_rows([2]))
    with pytest.raises(JournalError, match="disk says no"):
        journal.close()
    assert [row[0] for row in _stored(path)] == [0]
