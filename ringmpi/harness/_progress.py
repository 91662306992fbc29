"""A progress bar for long runs that costs nothing per task."""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    """A progress bar on stderr that costs nothing per task.

    Redraws at most every 0.2 s on a terminal and every 10 s otherwise (a log
    file, or mpiexec forwarding stderr), so a run of many tiny tasks is not
    slowed by drawing it. Use it as a context manager: it closes on every path.
    """

    def __init__(self, total: int, file: TextIO | None = None, desc: str = "fib"):
        from tqdm import tqdm

        out = sys.stderr if file is None else file
        # Without a stderr (2>&-) there is nowhere to draw: the bar stays off.
        tty = out is not None and out.isatty()
        self.bar = tqdm(
            disable=out is None,
            total=total,
            desc=desc,
            unit="task",
            file=out,
            leave=False,
            mininterval=0.2 if tty else 10.0,
            dynamic_ncols=tty,
        )

    def __call__(self, done: int, total: int) -> None:
        if total != self.bar.total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.bar.close()
