"""README.md and the site's pages (docs/): every shell example runs as written, in order.

The examples run as one bash script in a fresh copy of the source tree, as a
new user would type them into one terminal: README.md's Quick start makes the
venv there (``pip install '.[mpi]'``), and every later block uses it. The
environment is stripped of what would hide a missing step (an active venv,
the Open MPI root and oversubscription variables), so the documents must set
them up themselves. Blocks after a ``<!-- docs-check: skip (why) -->`` line
are left out (a real cluster, Docker, the whole test suite); a ``python``
block whose first line is ``# NAME.py`` is written to that file first. The
benchmark scripts run with ``BENCH_ARGS=--quick`` (documented in
docs/benchmarks.md): tiny inputs, results checked, the commands as written.
The pages run in the order of the site's navigation (``mkdocs.yml``), after
README.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import mpirun
import pytest

ROOT = mpirun.ROOT
#: README.md, then the site's pages in the order of mkdocs.yml's nav.
PAGES = (
    "index.md",
    "getting-started.md",
    "ring.md",
    "fibfarm.md",
    "library/executor.md",
    "library/farm.md",
    "library/data.md",
    "library/journal.md",
    "library/failures.md",
    "clusters.md",
    "benchmarks.md",
    "reference/api.md",
    "reference/environment.md",
    "architecture.md",
    "development.md",
    "changelog.md",
)
DOCS = ("README.md", *(f"docs/{page}" for page in PAGES))
SKIP = re.compile(r"<!--\s*docs-check:\s*skip\b")
FILE_NAME = re.compile(r"^#\s*([\w.-]+\.py)\s*$")
# What a user's shell would not have: an active venv, and the variables the
# documents must tell the user to set.
DROPPED = ("VIRTUAL_ENV", "OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")
DROPPED_PREFIXES = ("PRTE_MCA_", "OMPI_MCA_", "PMIX_MCA_", "RINGMPI_", *mpirun._LAUNCHER_PREFIXES)
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".venvs",
    "site",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    "bench-results",
)


@dataclass
class Block:
    """A fenced code block of a Markdown file."""

    doc: str
    line: int
    lang: str
    text: str
    skip: bool


def code_blocks(doc: str) -> list[Block]:
    """Return the fenced code blocks of ``doc`` (a file in the root), in order."""
    blocks = []
    lines = (ROOT / doc).read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            lang = lines[i][3:].strip()
            skip = i > 0 and bool(SKIP.search(lines[i - 1]))
            end = i + 1
            while not lines[end].startswith("```"):
                end += 1
            blocks.append(Block(doc, i + 1, lang, "\n".join(lines[i + 1 : end]), skip))
            i = end
        i += 1
    return blocks


def docs_script() -> str:
    """Return the bash script of every runnable block of README.md, then the pages."""
    parts = ["set -ex"]
    for doc in DOCS:
        for block in code_blocks(doc):
            if block.skip:
                continue
            if block.lang == "sh":
                parts.append(f"# --- {doc}:{block.line}\n{block.text}")
            elif block.lang == "python":
                name = FILE_NAME.match(block.text.splitlines()[0])
                if name:
                    parts.append(
                        f"# --- {doc}:{block.line}\n"
                        f"cat > {name.group(1)} <<'RINGMPI_DOC_EOF'\n{block.text}\nRINGMPI_DOC_EOF"
                    )
    return "\n".join(parts) + "\n"


def user_env(home: Path) -> dict[str, str]:
    """Our environment as a fresh shell of a new user would have it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in DROPPED and not k.startswith(DROPPED_PREFIXES)
    }
    # No venv's bin on PATH (ours, if pytest runs from one): the documents
    # must activate theirs.
    path = [d for d in env.get("PATH", "").split(os.pathsep) if d]
    env["PATH"] = os.pathsep.join(d for d in path if not (Path(d).parent / "pyvenv.cfg").exists())
    env["BENCH_ARGS"] = "--quick"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["MPLCONFIGDIR"] = str(home / "mpl")
    return env


# --- the documents themselves --------------------------------------------------------


def test_readme_has_no_relative_links():
    # README.md is the long description on a package index, where a relative
    # link leads nowhere: files are named, not linked.
    links = re.findall(r"\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    assert links and all(link.startswith("https://") for link in links), links


def test_every_page_is_checked_and_in_the_sites_nav():
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert pages == sorted(PAGES)
    nav = re.findall(
        r"^\s*- (?:[^:\n]+: )?([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M
    )
    assert nav == list(PAGES)


def test_the_environment_page_lists_every_variable_of_config():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hooks", ROOT / "docs" / "hooks.py")
    assert spec and spec.loader
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    from ringmpi.base import config

    names = {v for k, v in vars(config).items() if k.isupper() and str(v).startswith("RINGMPI_")}
    source = (ROOT / "ringmpi" / "base" / "config.py").read_text()
    rows = hooks.variables(source)
    assert {name for name, _ in rows} == names and all(text for _, text in rows), rows
    page = (ROOT / "docs" / "reference" / "environment.md").read_text()
    assert hooks.on_page_markdown(page) != page
    assert all(f"`{name}`" in hooks.on_page_markdown(page) for name in names)


def test_the_script_holds_the_examples():
    script = docs_script()
    # The venv, then the root and oversubscription lines, then the first mpiexec.
    first_mpiexec = script.index("\nmpiexec ")
    assert script.index("pip install '.[mpi]'") < script.index(". .venv/bin/activate")
    assert script.index("export OMPI_ALLOW_RUN_AS_ROOT=1") < first_mpiexec
    assert script.index("export PRTE_MCA_rmaps_default_mapping_policy=") < first_mpiexec
    assert "cat > squares.py" in script
    assert script.index("cat > squares.py") < script.index("python squares.py")
    assert "scripts/bench-fib" in script and "scripts/bench-ring" in script
    # The site's pages come after README, in the order of the nav.
    assert script.index("# --- README.md:") < script.index("# --- docs/getting-started.md:")
    assert "cat > executor_and_pool.py" in script and "cat > emcee_example.py" in script
    assert script.index("cat > slowest.py") < script.index("python slowest.py")
    # Skipped: the cluster, the hostfile, the test suite itself.
    assert "scripts/cluster" not in script and "docker build" not in script
    assert "--hostfile" not in script
    assert "python -m pytest" not in script


# --- every example, run ----------------------------------------------------------------


@pytest.mark.timeout(1500)
def test_examples_run_as_written(tmp_path):
    tree = tmp_path / "ringmpi"
    shutil.copytree(ROOT, tree, ignore=COPY_IGNORE)
    home = tmp_path / "home"
    home.mkdir()
    script = tmp_path / "docs.sh"
    script.write_text(docs_script())
    # Not mpirun.Process: that adds the Open MPI root variables, which the
    # documents must set themselves.
    popen = subprocess.Popen(
        ["bash", str(script)],
        cwd=tree,
        env=user_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        output, _ = popen.communicate(timeout=1400)
    except subprocess.TimeoutExpired:
        mpirun.kill_session(popen.pid)
        output, _ = popen.communicate(timeout=30)
        pytest.fail(f"the examples did not finish within 1400 s:\n{output[-8000:]}")
    finally:
        mpirun.kill_session(popen.pid)
    assert popen.returncode == 0, output[-12000:]
    # What the documents promise, from the runs themselves.
    squares = next(
        b.text for b in code_blocks("README.md") if b.text.startswith("[0, 1, 4, 9, 16]")
    )
    assert "1024 [1, 2]" in output, output[-4000:]  # README's executor and pool
    assert squares in output.splitlines(), output[-4000:]
    assert 'Processor 0 received message "P0P1P2P3" from rank 3' in output
    assert output.count("done: ") >= 2, output[-4000:]  # the fibfarm runs without -q, --json
    report = json.loads((tree / "fib.json").read_text())
    assert report["quick"] is True and report["targets"] == []
    trace = json.loads((tree / "run.json").read_text())
    assert sum(e["ph"] == "X" for e in trace["traceEvents"]) == 6  # fib(30..25)
    for png in ("fib.png", "ring-3.png", "ring-2.png", "run.png"):
        assert (tree / png).read_bytes()[:4] == b"\x89PNG", png
