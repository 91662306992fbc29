"""The package stays readable: modules and functions of a size one can hold in mind."""

from __future__ import annotations

import ast
import pathlib

import ringmpi

PACKAGE = pathlib.Path(ringmpi.__file__).parent
#: The longest module and the longest function, in lines.
MODULE_LINES, FUNCTION_LINES = 350, 60


def _modules() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_too_long():
    long = {
        str(path.relative_to(PACKAGE)): count
        for path in _modules()
        if (count := len(path.read_text().splitlines())) > MODULE_LINES
    }
    assert long == {}, f"over {MODULE_LINES} lines: {long}"


def test_no_function_is_too_long():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = lines
    assert long == {}, f"over {FUNCTION_LINES} lines: {long}"
