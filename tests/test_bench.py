"""``python -m ringmpi.bench``: the quick mode under a real mpiexec, and its pure pieces.

Timings are never asserted: only that results are right and the output has
its shape.
"""

from __future__ import annotations

import ctypes
import json
import os

import pytest

from ringmpi import fib
from ringmpi.bench import _data as bench_data
from ringmpi.bench import _engine as bench_engine
from ringmpi.bench import _fib as bench_fib
from ringmpi.bench import _local as bench_local
from ringmpi.bench import _main as bench
from ringmpi.bench import _pool as bench_pool
from ringmpi.bench import _ring as bench_ring
from ringmpi.fib import fib_exact

BENCH = ("-m", "ringmpi.bench")
ROW_KEYS = {
    "approach",
    "workers",
    "wall_min",
    "wall_median",
    "walls",
    "baseline",
    "speedup",
    "efficiency",
    "per_task_us",
    "root_cpu_pct",
    "rank_cpu_s",
    "correct",
}
METHODS = ("ring", "ring_pickle", "ringtest", "pingpong", "pingpong_filled")


def data_rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines() if line and not line.startswith("#")]


# --- end to end, under mpiexec ------------------------------------------------------


def test_fib_quick_json(mpirun):
    result = mpirun(3, *BENCH, "fib", "--quick", "--json", timeout=240).check(0)
    report = json.loads(result.stdout)
    assert report["benchmark"] == "fib"
    assert report["ranks"] == 3
    assert report["quick"] is True
    assert list(report["workloads"]) == list(bench_fib.WORKLOAD_NAMES)
    compiler = bench_local.find_compiler() is not None
    for name, work in report["workloads"].items():
        assert work["tasks"] == len(bench_fib.workloads(quick=True)[name])
        assert [row["approach"] for row in work["rows"]] == list(bench_fib.APPROACHES)
        for row in work["rows"]:
            if row["approach"].startswith("c-") and not compiler:
                assert "compiler" in row["skipped"]
                continue
            assert set(row) == ROW_KEYS, row
            assert row["correct"] is True, (name, row)
            assert len(row["walls"]) == 1
            assert len(row["rank_cpu_s"][0]) == 3
        by_name = {row["approach"]: row for row in work["rows"]}
        assert by_name["sequential"]["speedup"] == 1.0
        assert by_name["farm-dynamic"]["workers"] >= 1
    # Quick mode checks results; its tiny inputs are never held to the targets.
    assert report["targets"] == []


def test_pool_quick_json(mpirun):
    pytest.importorskip("emcee")
    pytest.importorskip("schwimmbad")
    result = mpirun(3, *BENCH, "pool", "--quick", "--json", timeout=240).check(0)
    report = json.loads(result.stdout)
    assert report["benchmark"] == "pool"
    assert list(report["workloads"]) == list(bench_pool.WORKLOADS)
    for name, work in report["workloads"].items():
        assert work["n"] == bench_pool.SIZES[name][1]
        rows = work["rows"]
        assert [row["approach"] for row in rows] == list(bench_pool.APPROACHES[name])
        for row in rows:
            assert row["correct"] is True, (name, row)
            assert row["wall_min"] > 0 and len(row["walls"]) == 1
    assert report["targets"] == []  # quick mode checks results only


def test_pool_targets():
    def rows(**walls):
        rows = [{"approach": a, "wall_min": w, "per_task_us": w} for a, w in walls.items()]
        return {"rows": rows}

    report = {
        "workloads": {
            "submit": rows(**{"farm-executor": 10.0, "futures": 150.0}),
            "map": rows(**{"farm-pool": 1.0, "pool": 0.8, "schwimmbad": 4.0}),
            "emcee": rows(**{"farm-pool": 1.0, "pool": 1.0, "schwimmbad": 1.1, "futures": 0.9}),
        }
    }
    met = {t["target"]: (round(t["value"], 3), t["met"]) for t in bench_pool.targets(report)}
    assert met == {
        "submit: farm-executor per-task time [us] <= 30": (10.0, True),
        "submit: farm-executor speed / futures speed >= 1": (15.0, True),
        "map: farm-pool speed / pool speed >= 0.9": (0.8, False),
        "map: farm-pool speed / schwimmbad speed >= 5": (4.0, False),
        "emcee: farm-pool speed / pool speed >= 0.95": (1.0, True),
        "emcee: farm-pool speed / schwimmbad speed >= 1": (1.1, True),
        "emcee: farm-pool speed / futures speed >= 1": (0.9, False),
    }


def test_engine_quick_json(mpirun):
    result = mpirun(3, *BENCH, "engine", "--quick", "--json", timeout=240).check(0)
    report = json.loads(result.stdout)
    assert report["benchmark"] == "engine" and report["targets"] == []
    best = bench_engine.summary(report)
    assert list(best) == list(bench_engine.WORKLOADS)
    scale = {row["approach"]: row for row in best["scale"]}
    assert list(scale) == ["farm-map", "farm-executor", "futures"]
    assert all(row["correct"] and 0 < row["efficiency"] <= 1.05 for row in scale.values())
    cancel = {row["approach"]: row for row in best["cancel"]}
    assert cancel["farm-executor"]["ran"] < cancel["farm-executor"]["tasks"]
    assert all(row["correct"] for row in best["memory"])


def test_engine_targets():
    report = {
        "workloads": {
            "scale": {"runs": [[
                {"approach": "farm-map", "efficiency": 0.95},
                {"approach": "farm-executor", "efficiency": 0.85},
                {"approach": "futures", "efficiency": 0.9},
            ]]},
            "head-of-line": {"runs": [[{"approach": "farm-executor", "ratio": 1.2}]]},
            "cancel": {"runs": [[{"approach": "farm-executor", "seconds": 0.5}]]},
            "memory": {"runs": [[{"approach": "farm-map", "volume_mib": 954, "added_mib": 400}]]},
        }
    }  # fmt: skip
    met = {t["target"]: (round(t["value"], 3), t["met"]) for t in bench_engine.targets(report)}
    assert met == {
        "scale: farm-map efficiency >= 0.9": (0.95, True),
        "scale: farm-map efficiency / futures' >= 1": (1.056, True),
        "scale: farm-executor efficiency >= 0.9": (0.85, False),
        "scale: farm-executor efficiency / futures' >= 1": (0.944, False),
        "head-of-line: farm-executor in flight / alone <= 1.5": (1.2, True),
        "cancel: farm-executor seconds <= 2": (0.5, True),
        "memory: farm-map root peak added [MiB] <= 300": (400, False),
    }


def test_pool_quick_table_one_workload(mpirun):
    result = mpirun(3, *BENCH, "pool", "--quick", "-w", "submit", "-q", timeout=120).check(0)
    assert [row[0] for row in data_rows(result.stdout)] == ["farm-executor", "futures"]


def test_fib_quick_table_filtered(mpirun):
    approaches = "sequential,pool,children,farm-dynamic"
    result = mpirun(
        3, *BENCH, "fib", "--quick", "-w", "article", "-a", approaches, "--repeat", "2", timeout=180
    ).check(0)
    lines = result.stdout_lines
    assert lines[0].startswith("# ringmpi.bench fib: 3 MPI ranks")
    assert lines[1].startswith("# workload article: 22 21 20 19 18 17")
    assert lines[2].split()[1:3] == ["approach", "P"]
    rows = data_rows(result.stdout)
    assert [r[0] for r in rows[:4]] == approaches.split(",")
    for r in rows[:4]:
        assert len(r) == 9 and r[-1] == "yes", r
    assert "2 runs each (quick: results checked, timings not compared)" in lines[0]
    assert not any("target" in line for line in lines), result.describe()
    assert "issue" not in result.stdout + result.stderr
    assert result.stderr == "", result.describe()


def test_fib_quick_one_run_wording(mpirun):
    result = mpirun(
        3, *BENCH, "fib", "--quick", "-w", "empty", "-a", "sequential,farm-dynamic", timeout=120
    ).check(0)
    assert "1 run each (quick" in result.stdout_lines[0], result.describe()
    assert "runs each" not in result.stdout
    assert " NO" not in result.stdout and "target" not in result.stdout, result.describe()


def test_ring_quick_json(mpirun):
    result = mpirun(3, *BENCH, "ring", "--quick", "--json", timeout=180).check(0)
    report = json.loads(result.stdout)
    assert report["benchmark"] == "ring"
    assert [r["size"] for r in report["rows"]] == bench_ring.QUICK_SIZES
    for row in report["rows"]:
        for method in METHODS:
            assert set(row[method]) == {"us_min", "us_mean", "samples_us", "bandwidth_MBps"}
            assert row[method]["us_min"] > 0
        assert row["hop_ratio_ringtest"] > 0
        assert row["bw_ratio_pingpong_filled"] > 0
    assert report["targets"] == []


@pytest.mark.parametrize("n", [2, 3])
def test_ring_quick_table(mpirun, n):
    result = mpirun(n, *BENCH, "ring", "--quick", "-s", "4M", "-q", timeout=180).check(0)
    lines = result.stdout_lines
    assert lines[0] == "# latency"
    assert "# bandwidth [MB/s]" in lines
    rows = data_rows(result.stdout)
    assert [r[0] for r in rows] == ["4194304", "4194304"]
    assert [len(r) for r in rows] == [8, 8]


def test_plot(mpirun, tmp_path):
    png = tmp_path / "ring.png"
    result = mpirun(2, *BENCH, "ring", "--quick", "-s", "1,1K", "--plot", str(png), timeout=180)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        result.check(1)
        assert result.error_lines == [
            "error: --plot needs matplotlib: pip install matplotlib "
            "(or pip install '.[plot]' in a ringmpi checkout)"
        ], result.describe()
        assert not png.exists()
    else:
        result.check(0)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fib_needs_ranks(pyrun):
    result = pyrun(*BENCH, "fib", "--quick", timeout=60).check(2)
    assert result.error_lines == [
        "error: the MPI approaches need at least 2 ranks: run under mpiexec -n 3"
    ], result.describe()


def test_bad_approach(pyrun):
    result = pyrun(*BENCH, "fib", "-a", "pool,nope", timeout=60).check(2)
    [line] = result.error_lines
    assert "invalid choice 'pool,nope'" in line, result.describe()


# --- pure pieces ------------------------------------------------------------------


def test_workloads():
    full = bench_fib.workloads()
    assert full["article"] == [38, 37, 36, 35, 34, 33]
    assert sorted(full["uniform"]) == sorted(list(range(25, 33)) * 5)
    assert len(full["tiny"]) == 1000 and set(full["tiny"]) <= set(range(15, 21))
    assert full["tiny"] == bench_fib.workloads()["tiny"]  # seeded
    assert full["empty"] == [1] * 2000
    assert set(bench_fib.workloads(quick=True)) == set(full)


def outcome(name, walls, workers=2):
    out = bench_fib.Outcome(name, workers=workers, walls=walls)
    out.root_cpu = [0.5 * w for w in walls]
    out.rank_cpu = [[0.0, 0.0]] * len(walls)
    return out


def test_summarize_speedup_and_efficiency():
    outcomes = {
        "sequential": outcome("sequential", [4.0, 5.0, 4.5], workers=1),
        "pool": outcome("pool", [2.5, 2.0, 3.0]),
        "c-sequential": outcome("c-sequential", [0.2], workers=1),
        "c-threads": outcome("c-threads", [0.125]),
        "futures": bench_fib.Outcome("futures", skipped="no MPI"),
    }
    rows = {r["approach"]: r for r in bench_fib.summarize(outcomes, ntasks=4)}
    assert rows["sequential"]["speedup"] == 1.0
    assert rows["sequential"]["efficiency"] == 1.0
    pool = rows["pool"]
    assert (pool["wall_min"], pool["wall_median"]) == (2.0, 2.5)
    assert pool["speedup"] == 2.0  # min over min
    assert pool["efficiency"] == 1.0
    assert pool["per_task_us"] == 0.5e6
    assert pool["root_cpu_pct"] == 50.0
    assert rows["c-threads"]["baseline"] == "c-sequential"
    assert rows["c-threads"]["speedup"] == 1.6
    assert rows["futures"] == {"approach": "futures", "workers": 0, "skipped": "no MPI"}


def test_summarize_without_baseline():
    rows = bench_fib.summarize({"pool": outcome("pool", [1.0])}, ntasks=2)
    assert rows[0]["speedup"] is None and rows[0]["efficiency"] is None


def test_c_kernel(tmp_path):
    if bench_local.find_compiler() is None:
        pytest.skip("no C compiler")
    kernel = bench_local.load_c_kernel(bench_local.build_c_kernel(tmp_path))
    assert [kernel(n) for n in range(1, 26)] == [fib_exact(n) for n in range(1, 26)]
    assert kernel(30) == 832040


def test_c_kernel_counts_like_python(tmp_path):
    # The same source built with its call counter: the same values as the
    # Python kernel, and the same number of calls, 2 * fib(n) - 1.
    if bench_local.find_compiler() is None:
        pytest.skip("no C compiler")
    lib = bench_local.build_c_kernel(tmp_path, count_calls=True)
    kernel = bench_local.load_c_kernel(lib)
    counter = ctypes.c_longlong.in_dll(ctypes.CDLL(str(lib)), "ringmpi_fib_calls")
    for n in range(1, 26):
        counter.value = 0
        assert kernel(n) == fib.fib(n)
        assert counter.value == 2 * fib_exact(n) - 1 == fib.calls(n), n


def test_c_kernel_without_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    assert bench_local.find_compiler() is None
    with pytest.raises(bench_local.Unavailable, match="no C compiler"):
        bench_local.build_c_kernel(tmp_path)


def test_c_kernel_broken_compiler(tmp_path):
    with pytest.raises(bench_local.Unavailable, match="could not run"):
        bench_local.build_c_kernel(tmp_path, compiler=os.fspath(tmp_path / "no-such-cc"))
    with pytest.raises(bench_local.Unavailable, match="compiler failed"):
        bench_local.build_c_kernel(tmp_path, compiler="false")


def test_find_compiler_honours_cc():
    assert bench_local.find_compiler({"CC": "clang -fno-lto"}) == "clang -fno-lto"


def fib_report(walls: dict[str, dict[str, float]]) -> dict:
    return {
        "workloads": {
            name: {
                "rows": [
                    {"approach": a, "wall_min": w, "per_task_us": w / 2000 * 1e6}
                    for a, w in approaches.items()
                ]
            }
            for name, approaches in walls.items()
        }
    }


def test_fib_targets():
    report = fib_report(
        {
            "article": {"farm-dynamic": 3.6, "pool": 3.55, "futures": 3.7},
            "tiny": {"farm-dynamic": 0.2, "pool": 0.1, "futures": 0.4},
            "empty": {"farm-dynamic": 0.008},
        }
    )
    targets = {t["target"]: t for t in bench.fib_targets(report)}
    pool = targets["article: farm-dynamic speed / pool speed >= 0.98"]
    assert pool["value"] == pytest.approx(3.55 / 3.6) and pool["met"]
    assert targets["article: farm-dynamic speed / futures speed >= 1"]["met"]
    assert not targets["tiny: farm-dynamic speed / pool speed >= 0.9"]["met"]
    assert not targets["tiny: farm-dynamic speed / futures speed >= 3"]["met"]
    empty = targets["empty: farm-dynamic per-task overhead [us] <= 5"]
    assert empty["value"] == pytest.approx(4.0) and empty["met"]
    assert not any(t.startswith("uniform") for t in targets)  # not run: not reported


def ring_row(size, ring, ringtest, pingpong, filled):
    def m(us):
        return {"us_min": us, "us_mean": us, "samples_us": [us], "bandwidth_MBps": size / us}

    return {
        "size": size,
        "rounds": 1,
        "ring": m(ring),
        "ring_pickle": m(ring * 10),
        "ringtest": m(ringtest),
        "pingpong": m(pingpong),
        "pingpong_filled": m(filled),
        "hop_ratio_ringtest": ring / ringtest,
        "pickle_ratio": 10.0,
        "bw_ratio_pingpong": pingpong / ring,
        "bw_ratio_pingpong_filled": filled / ring,
    }


def test_ring_targets_and_table():
    report = {
        "benchmark": "ring",
        "ranks": 3,
        "repeat": 1,
        "quick": False,
        "rows": [
            ring_row(1, 3.0, 3.0, 1.0, 1.0),
            ring_row(64, 3.3, 3.0, 1.0, 1.0),
            ring_row(1024, 4.0, 3.0, 1.0, 1.0),
            ring_row(4 << 20, 700.0, 700.0, 420.0, 690.0),
        ],
    }
    targets = bench.ring_targets(report)
    assert [t["met"] for t in targets] == [True, False, False, True]
    assert targets[0]["value"] == pytest.approx(1.1)
    assert "1024 B" in targets[1]["target"]
    text = bench_ring.format_report(report)
    rows = data_rows(text)
    assert len(rows) == 8 and rows[3][0] == "4194304"


def test_data_quick_json(mpirun):
    result = mpirun(3, *BENCH, "data", "--quick", "--json", timeout=240).check(0)
    report = json.loads(result.stdout)
    assert report["benchmark"] == "data" and report["quick"] is True
    assert report["targets"] == []
    approaches = [row["approach"] for row in report["memory"]]
    assert approaches == [
        "farm shared=",
        "FarmExecutor shared=",
        "FarmPool shared=",
        "mpi4py.futures initargs",
        "Pool initargs (fork)",
        "Pool initargs (spawn)",
    ]
    assert all(row["correct"] for row in report["memory"])
    assert report["bandwidth"]["correct"] and report["bandwidth"]["tasks"] == 4
    assert [row["approach"] for row in report["shared_work"]] == [
        "farm shared=",
        "farm, table in every task",
    ]
    assert all(row["correct"] for row in report["shared_work"])


def test_data_targets_from_a_report():
    report = {
        "size_mib": 1024,
        "memory": [{"approach": "farm shared=", "processes": 8, "pss_added_mib": 1100.0}],
        "bandwidth": {"ratio_pingpong": 0.5, "ratio_pingpong_filled": 0.8},
    }
    targets = bench_data.data_targets(report)
    assert [t["met"] for t in targets] == [True, False, True]
    assert targets[0]["limit"] == pytest.approx(1.3 * 1024)
