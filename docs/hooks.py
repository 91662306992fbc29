"""MkDocs hook: the table of ``RINGMPI_*`` variables, read from ``ringmpi/base/config.py``.

A page holds ``<!-- ringmpi: environment variables -->`` where the table goes;
each row is a constant of ``config.py`` whose value names a ``RINGMPI_*``
variable, described by the ``#:`` comment above it. Nothing is copied by hand,
so a variable added there is on the site at the next build.
"""

from __future__ import annotations

import ast
from pathlib import Path

MARKER = "<!-- ringmpi: environment variables -->"
CONFIG = Path(__file__).resolve().parent.parent / "ringmpi" / "base" / "config.py"


def variables(source: str) -> list[tuple[str, str]]:
    """Return ``(variable, description)`` for each ``RINGMPI_*`` constant in ``source``."""
    lines = source.splitlines()
    found = []
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)):
            continue
        value = node.value.value
        if not (isinstance(value, str) and value.startswith("RINGMPI_")):
            continue
        comment = []
        line = node.lineno - 2  # the line above, 0-based
        while line >= 0 and lines[line].startswith("#:"):
            comment.insert(0, lines[line][2:].strip())
            line -= 1
        found.append((value, " ".join(comment)))
    return found


def table(source: str) -> str:
    """Return the Markdown table of the variables in ``source``."""
    rows = ["| variable | meaning |", "|---|---|"]
    rows += [f"| `{name}` | {text} |" for name, text in variables(source)]
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, table(CONFIG.read_text()))
