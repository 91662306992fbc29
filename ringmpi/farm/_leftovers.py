"""What a farm's tasks left running: non-daemon threads and child processes.

Either keeps the rank alive after the program ends (the interpreter joins
non-daemon threads; a child holding the output keeps ``mpiexec`` waiting),
with no word. The farm takes a :func:`snapshot` as it starts and, as it
ends, names what is new in one warning line (:func:`left_behind`).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Snapshot:
    """The non-daemon threads and the live child processes at one moment."""

    threads: frozenset[int]
    children: frozenset[int]


def _threads() -> dict[int, threading.Thread]:
    main, current = threading.main_thread(), threading.current_thread()
    return {
        t.ident: t
        for t in threading.enumerate()
        if t.ident is not None and t.is_alive() and not t.daemon and t not in (main, current)
    }


def _children(tids: list[str] | None = None) -> dict[int, str]:
    """Live (not zombie) children of this process (or of its threads
    ``tids``), with their command line (Linux)."""
    found: dict[int, str] = {}
    try:
        tasks = os.listdir("/proc/self/task") if tids is None else tids
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as listing:
                pids = [int(word) for word in listing.read().split()]
        except (OSError, ValueError):
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    state = stat.read().rsplit(")", 1)[1].split()[0]
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError):
                continue
            if state != "Z":
                found[pid] = command.strip()
    return found


def snapshot() -> Snapshot:
    """Return the non-daemon threads and live children there are now."""
    return Snapshot(frozenset(_threads()), frozenset(_children()))


def left_behind(before: Snapshot) -> str | None:
    """Name the non-daemon threads and live children started since ``before``.

    Returns:
        ``"thread 'worker-1', child process 1234 (sleep 60)"``, or None.
    """
    threads = [t for ident, t in _threads().items() if ident not in before.threads]
    children = {pid: c for pid, c in _children().items() if pid not in before.children}
    return _named(threads, children)


def _named(threads: list[threading.Thread], children: dict[int, str]) -> str | None:
    parts = [f"thread {t.name!r}" for t in threads]
    for pid, command in sorted(children.items()):
        shown = command if len(command) <= 40 else command[:37] + "..."
        parts.append(f"child process {pid}" + (f" ({shown})" if shown else ""))
    return ", ".join(parts) or None


def warning(before: Snapshot, where: str) -> str | None:
    """The one warning line for what the tasks left running, or None.

    Args:
        before: The snapshot taken as the farm started.
        where: The rank, as ``rank@host``.
    """
    return _warning(left_behind(before), where)


def _warning(what: str | None, where: str) -> str | None:
    if what is None:
        return None
    return (
        f"a task left {what} running on rank {where} after the farm: the job cannot end "
        "until it stops (join the thread or wait for the process in the task, "
        "or make it a daemon)"
    )


class DaemonWatch:
    """What the tasks run on the root's compute thread leave running.

    That thread is a daemon (a task stuck there must not keep the root
    alive), so the threads its tasks start are daemons too: unlike on a
    worker, the interpreter does not wait for them, and they stop when the
    program ends. Only a change in the number of threads makes it look.
    Their child processes are the compute thread's own, read as it ends:
    not those of the program's other threads.
    """

    def __init__(self) -> None:
        self.known: weakref.WeakSet[threading.Thread] = weakref.WeakSet(threading.enumerate())
        self.count = threading.active_count()
        self.started: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
        self.children: dict[int, str] = {}

    def note_children(self) -> None:
        """On the compute thread, as it ends: note its live children."""
        self.children = _children([str(threading.get_native_id())])

    def wrap(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Return ``fn``, noting the threads each call leaves running."""

        def watched(task: Any) -> Any:
            try:
                return fn(task)
            finally:
                if threading.active_count() != self.count:
                    self._look()

        return watched

    def _look(self) -> None:
        for thread in threading.enumerate():
            if thread not in self.known:
                self.known.add(thread)
                if thread.daemon and not thread.name.startswith("ringmpi-"):
                    self.started.add(thread)
        self.count = threading.active_count()

    def warnings(self, where: str) -> list[str]:
        """The warning lines for what still runs: children, then threads."""
        lines = []
        children = {pid: c for pid, c in self.children.items() if os.path.exists(f"/proc/{pid}")}
        child_line = _warning(_named([], children), where)
        if child_line is not None:
            lines.append(child_line)
        alive = sorted((t for t in self.started if t.is_alive()), key=lambda t: t.name)
        if not alive:
            return lines
        names = _named(alive, {})
        lines.append(
            f"a task left {names} running on rank {where}, the root, after the farm: tasks "
            "there run on a daemon thread, so each is a daemon too and stops when the program "
            "ends (join it in the task to keep its work)"
        )
        return lines
