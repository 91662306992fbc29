"""The package shows its architecture: parts by role, layered as a contract lint-imports checks."""

from __future__ import annotations

import importlib
import os
import pathlib
import shutil
import subprocess

import pytest

import ringmpi

PACKAGE = pathlib.Path(ringmpi.__file__).parent
REPO = PACKAGE.parent
PARTS = ("base", "bench", "executor", "farm", "fibfarm", "harness", "journal", "ring", "run")
#: Public modules inside a part, beside its __init__ and __main__.
PUBLIC_MODULES = {
    "base": {"config", "errors", "limits", "memory", "mpilib", "poll"},
    "farm": {"service", "timeline"},
}

needs_config = pytest.mark.skipif(
    not (REPO / "pyproject.toml").is_file() or shutil.which("lint-imports") is None,
    reason="needs the checkout's pyproject.toml and lint-imports (the test extra)",
)


def lint_imports(root: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the copy of ringmpi under ``root``, with the repo's contract."""
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run(
        [shutil.which("lint-imports") or "lint-imports", "--no-cache", "--config",
         str(REPO / "pyproject.toml")],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_top_level_holds_few_modules_and_the_parts():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 8, modules
    parts = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert parts == sorted(PARTS)


@pytest.mark.parametrize("part", PARTS)
def test_each_part_keeps_its_modules_private_and_exports_what_all_says(part):
    modules = {p.stem for p in (PACKAGE / part).glob("*.py")} - {"__init__", "__main__"}
    public = {m for m in modules if not m.startswith("_")}
    assert public == PUBLIC_MODULES.get(part, set())
    package = importlib.import_module(f"ringmpi.{part}")
    assert package.__all__, f"ringmpi.{part} has no __all__"
    missing = [name for name in package.__all__ if not hasattr(package, name)]
    assert missing == []


def test_the_programs_run_as_modules():
    for program in ("ring", "fibfarm", "bench", "run"):
        assert (PACKAGE / program / "__main__.py").is_file()


@needs_config
def test_the_layering_contract_holds():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@needs_config
@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("farm/_worker.py", "from ..harness import launch", "Each part imports only"),
        ("base/poll.py", "from .. import journal", "Each part imports only"),
        ("ring/_ring.py", "from ..fibfarm import run", "Each part imports only"),
        ("journal/_file.py", "from ..bench import main", "Each part imports only"),
        ("executor/_pool.py", "from ..farm import _engine", "private modules"),
        ("bench/_ring.py", "from ..farm.service import start", "service seam"),
        ("farm/_ft.py", "from . import _farm", "No circles"),
    ],
)
def test_a_forbidden_import_breaks_the_contract(tmp_path, module, line, contract):
    shutil.copytree(PACKAGE, tmp_path / "ringmpi", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "ringmpi" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0, done.stdout
    broken = [row for row in done.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(contract in row for row in broken), done.stdout


def test_the_old_import_paths_that_readme_shows_still_work():
    from ringmpi.farm import timeline
    from ringmpi.fib import fib
    from ringmpi.harness import launch
    from ringmpi.trace import chrome_trace, draw_timeline

    assert fib(10) == 55 and callable(launch)
    assert (chrome_trace, draw_timeline) == (timeline.chrome_trace, timeline.draw_timeline)
