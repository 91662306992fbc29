"""FarmPool under a real ``mpiexec``: the same answers as ``multiprocessing.Pool``,
and an emcee chain identical to emcee's serial run."""

from __future__ import annotations

import json
import multiprocessing
import re
import sys
from pathlib import Path

import pytest

PROGRAMS = Path(__file__).parent / "programs"
sys.path.insert(0, str(PROGRAMS))

import poolfns  # noqa: E402


@pytest.fixture(scope="module")
def expected():
    """Every method's results from ``multiprocessing.Pool`` on the same inputs."""
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        return json.loads(json.dumps(poolfns.run_calls(pool)))


@pytest.mark.parametrize("n", [1, 3])
def test_methods_match_multiprocessing(mpirun, expected, n):
    result = mpirun(n, str(PROGRAMS / "pool_methods.py"), timeout=120).check(0)
    lines = [line for line in result.stdout_lines if line.startswith("{")]
    assert len(lines) == 1, result.describe()
    assert json.loads(lines[0]) == expected


def test_emcee_chain_equals_serial(mpirun, tmp_path):
    pytest.importorskip("emcee")
    import numpy as np

    out = tmp_path / "chain.npz"
    mpirun(3, str(PROGRAMS / "emcee_pool.py"), str(out), timeout=180).check(0)
    chain, log_prob = poolfns.emcee_chain(None)
    got = np.load(out)
    assert got["chain"].shape == chain.shape == (30, 16, 4)
    assert np.array_equal(got["chain"], chain)
    assert np.array_equal(got["log_prob"], log_prob)
    # The walkers moved: a chain that never left its start would match trivially.
    assert not np.array_equal(chain[0], chain[-1])


def readme_block(marker: str) -> str:
    """The Python code block of the executor and pool page that contains ``marker``."""
    text = (Path(__file__).parent.parent / "docs" / "library" / "executor.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"{len(found)} blocks of the page contain {marker!r}"
    return found[0]


def test_readme_emcee_example(mpirun, tmp_path):
    pytest.importorskip("emcee")
    script = tmp_path / "emcee_example.py"
    script.write_text(readme_block("emcee.EnsembleSampler"))
    outputs = []
    for n in (3, 1):
        result = mpirun(n, str(script), timeout=180).check(0)
        lines = [line for line in result.stdout_lines if line.startswith(("mean", "chain"))]
        assert len(lines) == 2, result.describe()
        outputs.append(lines)
    # The same seed gives the same chain on 3 ranks as on 1.
    assert outputs[0] == outputs[1]
    acceptance = float(outputs[0][0].split(":")[1])
    assert 0.05 < acceptance < 0.95


def test_readme_three_interfaces(mpirun, tmp_path):
    script = tmp_path / "three.py"
    script.write_text(readme_block("FarmExecutor(comm, root=0)"))
    result = mpirun(3, str(script), timeout=120).check(0)
    assert result.stdout_lines == ["1024 [1, 2]", "[5, 4, 3, 2, 1, 0, 1, 2, 3, 4] [8, 9]"]
