"""The run journal on its own: made, written from a thread, closed, reopened; no MPI."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ringmpi.journal import Identity, Journal, JournalError, JournalWriteError, summarize
from ringmpi.journal import _file as journalfile


def square(x):
    return x * x


def _record(journal, indices, start=100.0):
    """Record the squares of ``indices`` as one chunk, each task 1 s long."""
    outcomes = [(i, i * i, None, repr(i), start + k + 1.0) for k, i in enumerate(indices)]
    journal.record(outcomes, 1, "host", start)


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
        _record(journal, range(start, start + 10))
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


def test_rows_are_committed_while_the_run_goes_on(tmp_path):
    path = str(tmp_path / "run.db")
    journal = Journal.open(path, Identity.of(square, list(range(3))), resume=False)
    _record(journal, [0, 1])
    assert journal.done == 2
    # Another reader sees them before the journal is closed.
    assert summarize(path).done == 2
    journal.close()


def test_a_failed_write_is_one_journal_error_and_nothing_is_counted(tmp_path):
    path = str(tmp_path / "run.db")
    journal = Journal.open(path, Identity.of(square, list(range(4))), resume=False)
    _record(journal, [0])
    assert journal.done == 1
    db = sqlite3.connect(path)  # make the next insert fail
    with db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON chunks BEGIN "
                   "SELECT RAISE(ABORT, 'disk says no'); END")  # fmt: skip
    db.close()
    journal.check()  # nothing failed yet
    _record(journal, [1])
    assert journal.done == 1
    # The run checks while no result arrives; and the next record raises.
    message = r"cannot write the journal .*run\.db: disk says no \(1 results are in it; rerun"
    with pytest.raises(JournalWriteError, match=message):
        journal.check()
    with pytest.raises(JournalWriteError, match=message):
        _record(journal, [2])
    with pytest.raises(JournalWriteError, match="disk says no"):
        journal.close()
    assert [row[0] for row in _stored(path)] == [0]


def _view(path):
    db = sqlite3.connect(path)
    try:
        return db.execute(
            'SELECT idx, attempt, ok, result, error, task, rank, host, start, "end" '
            "FROM attempts ORDER BY idx, attempt"
        ).fetchall()
    finally:
        db.close()


def test_the_attempts_view_shows_each_attempt_of_a_chunk(tmp_path):
    path = str(tmp_path / "run.db")
    journal = Journal.open(path, Identity.of(square, list(range(4))), resume=False)
    _record(journal, [2, 0])
    unpicklable = lambda: None  # noqa: E731
    failed = ValueError("no good")
    journal.record(
        [(1, None, failed, "1", 12.0), (3, unpicklable, None, "3", 13.0), (1, 1, None, "1", 14.0)],
        2, "other", 10.0,
    )  # fmt: skip
    journal.close()
    journalfile.wait_closed(path)
    rows = _view(path)
    assert [row[:3] for row in rows] == [(0, 1, 1), (1, 1, 0), (1, 2, 1), (2, 1, 1)]
    assert [pickle.loads(row[3]) for row in rows if row[2]] == [0, 1, 4]
    assert str(pickle.loads(rows[1][3])) == "no good" and rows[1][4] == "no good"
    # Each task starts when the one before it in its chunk ended.
    assert [row[5:] for row in rows] == [
        ("0", 1, "host", 101.0, 102.0),
        ("1", 2, "other", 10.0, 12.0),
        ("1", 2, "other", 12.0, 14.0),
        ("2", 1, "host", 100.0, 101.0),
    ]
    # The value that cannot be pickled is not in the journal: a resume runs it.
    again = Journal.open(path, Identity.of(square, list(range(4))), resume=True)
    assert again.previous == {0: (True, 0), 1: (True, 1), 2: (True, 4)}
    assert again.attempts == {0: 1, 1: 2, 2: 1}
    again.close()
    assert summarize(path).done == 3 and summarize(path).attempts == 4


def _format_1_journal(path, identity):
    """A journal as ringmpi wrote it before chunks: one row per attempt."""
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE attempts (idx INTEGER NOT NULL, attempt INTEGER NOT NULL, "
            "ok INTEGER NOT NULL, result BLOB, error TEXT, task TEXT, rank INTEGER, "
            'host TEXT, start REAL, "end" REAL, PRIMARY KEY (idx, attempt))'
        )
        db.executemany("INSERT INTO meta VALUES (?, ?)", [
            ("version", "1"), ("function", identity.function), ("tasks", str(identity.tasks)),
            ("tasks_sha256", identity.tasks_sha256), ("options", identity.options),
        ])  # fmt: skip
        db.executemany("INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            (0, 1, 1, pickle.dumps(0), None, "0", 1, "a", 1.0, 2.0),
            (1, 1, 0, pickle.dumps(ValueError("once")), "once", "1", 2, "b", 1.0, 3.0),
            (1, 2, 1, pickle.dumps(1), None, "1", 1, "a", 2.0, 4.0),
            (2, 1, 0, pickle.dumps(ValueError("twice")), "twice", "2", 2, "b", 3.0, 5.0),
        ])  # fmt: skip
    db.close()


def test_a_journal_of_format_1_is_read_as_it_is_and_rewritten_when_resumed(tmp_path):
    path = str(tmp_path / "run.db")
    identity = Identity.of(square, list(range(4)))
    _format_1_journal(path, identity)
    before = summarize(path)  # read-only: --status does not rewrite it
    assert (before.done, before.failed, before.missing, before.attempts) == (2, 1, 1, 4)
    assert before.errors == [(2, "2", "twice")]
    with pytest.raises(JournalError, match=r"already holds a journal \(2 of 4 tasks done\)"):
        Journal.open(path, identity, resume=False)
    db = sqlite3.connect(path)  # refused: left as it was
    assert db.execute("SELECT type FROM sqlite_master WHERE name = 'attempts'").fetchone() == (
        "table",
    )
    db.close()
    journal = Journal.open(path, identity, resume=True)
    assert journal.previous[0] == (True, 0) and journal.previous[1] == (True, 1)
    assert journal.previous[2][0] is False and str(journal.previous[2][1]) == "twice"
    assert journal.attempts == {0: 1, 1: 2, 2: 1}
    _record(journal, [3])
    journal.close()
    journalfile.wait_closed(path)
    assert [row[:3] for row in _view(path)] == [
        (0, 1, 1),
        (1, 1, 0),
        (1, 2, 1),
        (2, 1, 0),
        (3, 1, 1),
    ]
    after = summarize(path)
    assert (after.done, after.failed, after.missing, after.attempts) == (3, 1, 0, 5)


def test_a_journal_of_a_newer_format_or_with_damaged_rows_is_refused(tmp_path):
    path = str(tmp_path / "run.db")
    identity = Identity.of(square, [1, 2])
    journal = Journal.open(path, identity, resume=False)
    _record(journal, [0])
    journal.close()
    journalfile.wait_closed(path)
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = '3' WHERE key = 'version'")
    with pytest.raises(JournalError, match=r"written by a newer ringmpi \(journal format 3"):
        Journal.open(path, identity, resume=True)
    with db:
        db.execute("UPDATE meta SET value = '2' WHERE key = 'version'")
        db.execute("UPDATE chunks SET outcomes = '[[0, 1'")
    db.close()
    with pytest.raises(JournalError, match=r"run\.db is not a usable journal"):
        Journal.open(path, identity, resume=True)
    with pytest.raises(JournalError, match=r"run\.db is not a usable journal"):
        summarize(path)


def test_another_run_is_refused_unless_forced_and_forced_keeps_its_own_tasks(tmp_path):
    path = str(tmp_path / "run.db")
    journal = Journal.open(path, Identity.of(square, list(range(4))), resume=False)
    _record(journal, [0, 1, 2, 3])
    journal.close()
    fewer = Identity.of(square, [0, 1])
    with pytest.raises(JournalError, match=r"journal of another run: .*square over 4 tasks"):
        Journal.open(path, fewer, resume=True)
    forced = Journal.open(path, fewer, resume=True, force=True)
    assert forced.previous == {0: (True, 0), 1: (True, 1)} and forced.done == 2
    forced.close()
    # The identity is now the forced run's; entries past its tasks are not counted.
    summary = summarize(path)
    assert (summary.identity, summary.done, summary.missing, summary.attempts) == (fewer, 2, 0, 2)


def test_the_writer_commits_at_most_once_an_interval_and_at_once_when_flushed(
    tmp_path, monkeypatch
):
    commits = []
    commit = journalfile.Writer._commit
    monkeypatch.setattr(journalfile.Writer, "_commit", lambda self, work: commits.append(
        len(work)) or commit(self, work))  # fmt: skip
    path = str(tmp_path / "run.db")
    journal = Journal.open(path, Identity.of(square, list(range(200))), resume=False)
    began = time.monotonic()
    for start in range(0, 200, 2):
        _record(journal, [start, start + 1])
    took = time.monotonic() - began
    assert journal.done == 200 and sum(commits) == 100
    # One commit when the first chunk came, then one an interval at most, and
    # the last when asked (journal.done flushes).
    assert len(commits) <= 2 + took / journalfile.Writer.INTERVAL, (commits, took)
    # Flushing does not wait for the interval.
    monkeypatch.setattr(journalfile.Writer, "INTERVAL", 60.0)
    _record(journal, [0])  # a second attempt
    began = time.monotonic()
    journal.close()
    assert time.monotonic() - began < 30
    journalfile.wait_closed(path)
    assert summarize(path).attempts == 201


@pytest.mark.parametrize("path", ["", ":memory:"])
def test_a_journal_that_sqlite_would_keep_in_memory_is_refused(path):
    with pytest.raises(JournalError, match=r"the journal must be a file, not '"):
        Journal.open(path, Identity.of(square, [1]), resume=False)


def test_a_path_that_cannot_be_a_journal_file_is_refused_before_any_work(tmp_path):
    identity = Identity.of(square, [1])
    os.mkfifo(tmp_path / "fifo.db")
    for name in ("fifo.db", "."):
        with pytest.raises(JournalError, match=r"as a journal: it is not a file"):
            Journal.open(str(tmp_path / name), identity, resume=False)
    deep = tmp_path / ("d" * 200) / ("e" * 200) / ("f" * 200)
    deep.mkdir(parents=True)
    with pytest.raises(JournalError, match=r"longer than the 500 bytes SQLite takes"):
        Journal.open(str(deep / "run.db"), identity, resume=False)


def test_a_journal_that_cannot_be_made_says_so(tmp_path, monkeypatch):
    def refuse(path, meta):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(journalfile, "create", refuse)
    journal = Journal.open(str(tmp_path / "run.db"), Identity.of(square, [1]), resume=False)
    # At the first record or at close, whichever comes after the writer tried.
    with pytest.raises(JournalWriteError, match=r"^cannot create the journal .*run\.db: unable to"):
        try:
            _record(journal, [0])
        finally:
            journal.close()


def test_an_sqlite_database_that_is_not_a_journal_is_left_alone(tmp_path):
    path = str(tmp_path / "mine.db")
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE users (name TEXT)")
    db.close()
    with pytest.raises(JournalError, match=r"mine\.db is an SQLite database but not a ringmpi"):
        Journal.open(path, Identity.of(square, [1]), resume=True)
    db = sqlite3.connect(path)
    assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("users",)]
    with db:
        db.execute("DROP TABLE users")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('version', 'abc')")
    db.close()
    with pytest.raises(JournalError, match=r"not a usable journal: its format is 'abc'"):
        Journal.open(path, Identity.of(square, [1]), resume=True)


def _journal_of_four(tmp_path):
    path = str(tmp_path / "run.db")
    identity = Identity.of(square, list(range(4)))
    journal = Journal.open(path, identity, resume=False)
    _record(journal, [0, 1, 2, 3])
    journal.close()
    journalfile.wait_closed(path)
    return path, identity


@pytest.mark.parametrize(
    "outcomes",
    ["[1]", "5", "{}", '[["a",1,2,3,"x"]]', '[[0,1,0,2.5,"x"]]', '[[0,1,"z",0,"x"]]',
     '[[0,1,0,0,["t"]]]', '[[0,1,0,-5,"x"]]', '[[0,1,0,3,"x",7]]', "[[0"],
)  # fmt: skip
def test_damaged_outcomes_are_one_clear_error(tmp_path, outcomes):
    path, identity = _journal_of_four(tmp_path)
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE chunks SET outcomes = ?", (outcomes,))
    db.close()
    with pytest.raises(JournalError, match=r"run\.db is not a usable journal: "):
        summarize(path)
    with pytest.raises(JournalError, match=r"run\.db is not a usable journal: "):
        Journal.open(path, identity, resume=True)


def test_a_result_that_is_not_in_the_file_is_computed_again(tmp_path):
    path, identity = _journal_of_four(tmp_path)
    db = sqlite3.connect(path)
    with db:  # task 2's result gone: its size says 0
        db.execute(
            "UPDATE chunks SET outcomes = ?", ('[[0,1,0,5,"0"],[1,1,1,5,"1"],[2,1,2,0,"2"]]',)
        )
    db.close()
    summary = summarize(path)
    assert (summary.done, summary.failed, summary.missing) == (2, 1, 1)
    assert summary.errors == [(2, "2", "no result was stored")]
    journal = Journal.open(path, identity, resume=True)
    assert sorted(journal.previous) == [0, 1] and journal.attempts[2] == 1
    journal.close()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_status_reads_a_journal_in_a_folder_it_cannot_write():
    with tempfile.TemporaryDirectory(prefix="ringmpi-theirs-") as folder:
        os.chmod(folder, 0o755)  # others may read, not write
        path, _ = _journal_of_four(Path(folder))
        status = _status_as_nobody(path)
    assert status.returncode == 0, status.stderr
    assert "done 4, failed 0, missing 0 of 4 tasks (4 attempts)" in status.stdout


def _status_as_nobody(path):
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "ringmpi.fibfarm", "--journal", path, "--status"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_journal_left_open_is_closed_at_exit_with_what_it_holds(tmp_path):
    path = str(tmp_path / "run.db")
    program = (
        "from ringmpi.journal import Identity, Journal\n"
        "def square(x): return x * x\n"
        f"journal = Journal.open({path!r}, Identity.of(square, [0, 1, 2]), resume=False)\n"
        "journal.record([(i, i * i, None, repr(i), None) for i in range(3)], 1, 'h', None)\n"
    )
    ended = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60)
    assert ended.returncode == 0, ended.stderr
    assert summarize(path).done == 3


MIB = 2**20


def _large_journal(path, count, size):
    journal = Journal.open(str(path), Identity("t.big", count, "0" * 64), resume=False)
    for i in range(count):
        journal.record([(i, bytes([i]) * size, None, str(i), 101.0)], 1, "h", 100.0)
    journal.close()
    journalfile.wait_closed(str(path))


def test_status_reads_no_result_bodies(tmp_path):
    import tracemalloc

    _large_journal(tmp_path / "run.db", 4, 16 * MIB)
    tracemalloc.start()
    try:
        summary = summarize(str(tmp_path / "run.db"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (summary.done, summary.failed, summary.missing) == (4, 0, 0)
    assert peak < 2 * MIB, f"--status allocated {peak / MIB:.1f} MiB for 64 MiB of results"


def test_large_results_wait_for_the_disk_rather_than_pile_up(tmp_path, monkeypatch):
    import tracemalloc

    commit = journalfile.Writer._commit

    def slow_commit(self, work):  # a disk slower than the results arrive
        time.sleep(0.3)
        commit(self, work)

    monkeypatch.setattr(journalfile.Writer, "_commit", slow_commit)
    monkeypatch.setattr(journalfile.Writer, "MAX_BYTES", 32 * MIB, raising=False)
    tracemalloc.start()
    try:
        _large_journal(tmp_path / "run.db", 10, 16 * MIB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The bound (32 MiB, committing or waiting), the value being pickled and
    # its pickle's buffer (16 + 24 MiB): not all ten, and not a batch the
    # writer committed but still holds.
    assert peak < 88 * MIB, f"the root held {peak / MIB:.0f} MiB for 160 MiB of results"
    assert summarize(str(tmp_path / "run.db")).done == 10
    with contextlib.closing(sqlite3.connect(tmp_path / "run.db")) as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == journalfile.PAGE_SIZE
        (stored,) = db.execute("SELECT results FROM chunks WHERE rowid = 3").fetchone()
        assert pickle.loads(stored) == bytes([2]) * 16 * MIB


def test_identity_does_not_depend_on_the_hash_seed(tmp_path):
    # Sets of strings iterate in an order that follows PYTHONHASHSEED; the
    # run's identity must not (a resume in another process would be refused).
    code = (
        "from ringmpi.journal._journal import Identity\n"
        "tasks = [frozenset({'alpha', 'beta', 'gamma', 'delta'}), {'x', 'y', 'z'},"
        " (1, {'q': {'r', 's', 't'}})]\n"
        "print(Identity.of(len, tasks).tasks_sha256)\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for seed in range(6)
    }
    assert len(digests) == 1
    # Tasks without sets keep the digest they always had (journals on disk resume).
    plain = Identity.of(square, list(range(4))).tasks_sha256
    assert plain == hashlib.sha256(pickle.dumps(list(range(4)), protocol=4)).hexdigest()
