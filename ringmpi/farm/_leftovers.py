"""What a farm's tasks left running: non-daemon threads and child processes.

Either keeps the rank alive after the program ends (the interpreter joins
non-daemon threads; a child holding the output keeps ``mpiexec`` waiting),
with no word. The farm takes a :func:`snapshot` as it starts and, as it
ends, names what is new in one warning line (:func:`left_behind`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass


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


def _children() -> dict[int, str]:
    """Live (not zombie) children of this process, with their command line (Linux)."""
    found: dict[int, str] = {}
    try:
        tasks = os.listdir("/proc/self/task")
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
    what = left_behind(before)
    if what is None:
        return None
    return (
        f"a task left {what} running on rank {where} after the farm: the job cannot end "
        "until it stops (join the thread or wait for the process in the task, "
        "or make it a daemon)"
    )
