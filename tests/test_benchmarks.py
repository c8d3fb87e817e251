"""The benchmark suite's bookkeeping: JSON results and the tables generated from them
(docs/benchmarks.md, docs/comparing-methods.md).

No benchmark runs here (speed figures live in ``benchmarks/``, never in timed tests).
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def benchmarks():
    """The modules ``benchmarks/suite.py`` and ``benchmarks/run.py`` (scripts, not a package)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        yield importlib.import_module("suite"), importlib.import_module("run")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


@pytest.fixture(scope="module")
def suite(benchmarks):
    return benchmarks[0]


def test_result_files_and_benchmark_table(suite, tmp_path, monkeypatch):
    started = suite.machine_info()
    assert started["cores"] >= 1 and "numpy" in started["versions"] and "cpu_snapshot" in started
    monkeypatch.setattr(sys, "argv", ["benchmarks/bench_x.py", "--quick"])
    path = suite.write_result("x", "what is measured", [("speed", "**5 pairs/s**"), ("size", "3 MB")],
                              {"pairs_per_s": 5.0}, quick=True, out=tmp_path / "x.json", started=started)
    doc = json.loads(path.read_text())
    assert doc["command"] == "python benchmarks/bench_x.py --quick" and doc["quick"] is True
    assert doc["figures"] == {"pairs_per_s": 5.0} and "cpu_snapshot" not in doc["machine"]
    assert doc["machine"]["cpu"] == started["cpu"] and doc["machine"]["versions"] == started["versions"]
    table = suite.render_table(suite.load_results(tmp_path))
    assert "| `x` | speed | **5 pairs/s** |" in table and "|  | size | 3 MB |" in table
    assert f"Measured on {started['cpu']}, {started['cores']} cores" in table and "`--quick`" in table
    assert "* `x` (`python benchmarks/bench_x.py --quick`): what is measured" in table
    # the block is replaced, the rest of the file kept
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"intro\n{suite.START}\nold\n{suite.END}\nrest\n")
    assert suite.update_benchmark_table(doc=doc, results_dir=tmp_path, order=[], suite=[]) is False
    assert doc.read_text() == f"intro\n{suite.START}\n{table}\n{suite.END}\nrest\n"
    assert suite.update_benchmark_table(doc=doc, results_dir=tmp_path, order=[], suite=[], check=True) is True
    with pytest.raises(ValueError, match="benchmarks:start"):
        suite.read_block("no markers")


def test_wall_times_are_summed_for_the_suite(suite, tmp_path, monkeypatch):
    """run.py records each benchmark's wall time in its result; the table lists them and sums the
    suite's once every suite benchmark has one (quick runs are not listed)."""
    monkeypatch.setattr(sys, "argv", ["benchmarks/bench_a.py"])
    for name, quick in (("a", False), ("b", False), ("c", True)):
        suite.write_result(name, "setup", [("m", "r")], {}, quick=quick, out=tmp_path / f"{name}.json")
    results = suite.load_results(tmp_path)
    assert suite.wall_times_line(results, ["a", "b", "c"], ["a", "b"]) == ""
    results["a"]["wall_s"], results["b"]["wall_s"], results["c"]["wall_s"] = 90.0, 60.0, 30.0
    line = suite.wall_times_line(results, ["a", "b", "c"], ["a", "b"])
    assert "`a` 1.5 min, `b` 1.0 min." in line and "`c`" not in line.split(" The suite")[0]
    assert line.endswith("The suite (`make benchmark`: `a`, `b`) sums to **2.5 min**.")
    del results["b"]["wall_s"]
    assert "sums to" not in suite.wall_times_line(results, ["a", "b"], ["a", "b"])
    assert suite.wall_times_line(results, ["a"], ["a"]) in suite.render_table(results, ["a"], ["a"])


def test_run_records_wall_time_in_the_result(benchmarks, tmp_path, monkeypatch):
    suite, run = benchmarks
    monkeypatch.setattr(run, "result_path", lambda name: tmp_path / f"{name}.json")
    (tmp_path / "x.json").write_text(json.dumps({"name": "x", "summary": []}))
    run.record_wall_time("x", 12.345)
    assert json.loads((tmp_path / "x.json").read_text()) == {"name": "x", "summary": [], "wall_s": 12.3}
    run.record_wall_time("missing", 1.0)  # a failed benchmark wrote nothing: nothing to record
    assert not (tmp_path / "missing.json").exists()
    assert suite.SUITE and not {"projection", "methods", "estimators"} & set(suite.SUITE)
    assert run.BENCHMARKS is suite.BENCHMARKS  # one registry


def test_benchmark_table_is_generated_from_the_results(benchmarks):
    """docs/benchmarks.md's benchmark block is what ``python benchmarks/run.py --readme-only``
    writes from ``benchmarks/results/*.json``."""
    suite, _ = benchmarks
    assert set(suite.load_results()) <= set(suite.BENCHMARKS)
    block = suite.read_block(suite.BENCHMARKS_DOC.read_text(encoding="utf-8"))
    assert block == suite.render_table(suite.load_results(), list(suite.BENCHMARKS), suite.SUITE), \
        "docs/benchmarks.md's benchmark table is stale: run `python benchmarks/run.py --readme-only`"
    assert suite.update_benchmark_table(check=True)


def test_generated_blocks_live_in_docs_not_in_the_readme(benchmarks):
    """The README keeps only the demo scores; the benchmark and method tables moved to docs/."""
    suite, _ = benchmarks
    readme = suite.README.read_text(encoding="utf-8")
    for marker in (suite.START, *suite.METHODS_MARKERS):
        assert marker not in readme
    assert suite.BENCHMARKS_DOC.parent == suite.METHODS_DOC.parent == REPO / "docs"


def test_methods_table_is_rendered_from_its_result(benchmarks, tmp_path):
    """suite.py writes docs/comparing-methods.md's method block from results/methods.json (the
    result bench_methods.py writes), and the committed block is current."""
    import bench_methods

    suite, _ = benchmarks

    row = {"method": "vlad+sift", "dataset": "demo", "status": "ok", "global_": "VLAD", "local": "RootSIFT",
           "global_gap": 0.5, "verified_gap": 0.75, "global_map100": 0.25, "verified_map100": 1.0, "extract_ms": 10.0,
           "global_bytes": 16384.0, "local_bytes": 1024.0}
    skipped = {"method": "bow+sift", "dataset": "demo", "status": "skipped", "reason": "KeyError: x"}
    doc = {"command": "python benchmarks/bench_methods.py --quick", "quick": True, "created": "2026-12-04T12:00:00",
           "machine": {"cores": 2, "other_processes_cpu_share": 0.5},
           "figures": {"datasets": ["demo"], "rows": [row, skipped]}}
    result = tmp_path / "methods.json"
    result.write_text(json.dumps(doc))
    block = suite.render_methods(doc)
    assert "| `vlad+sift` | VLAD | RootSIFT | 0.500 → 0.750 | 0.250 → 1.000 |  | 10 | 16.0 KB + 1.0 KB |" in block
    assert "* `bow+sift`: skipped (KeyError: x)" in block and "quick" in block and "50% of the CPU" in block
    assert bench_methods.summary_rows(doc["figures"]["rows"])[1] == (
        "demo: best GAP; best global-only GAP", "`vlad+sift` 0.7500; `vlad+sift` 0.5000")
    start, end = suite.METHODS_MARKERS
    md = tmp_path / "comparing-methods.md"
    md.write_text(f"intro\n{start}\n{end}\nrest\n")
    assert suite.update_methods_table(doc=md, result=result) is False
    assert md.read_text() == f"intro\n{start}\n{block}\n{end}\nrest\n"
    assert suite.update_methods_table(doc=md, result=result, check=True) is True
    assert suite.update_methods_table(check=True), \
        "docs/comparing-methods.md's method table is stale: run `python benchmarks/bench_methods.py --readme-only`"
    # rows kept by --merge name every earlier run they may come from
    doc["figures"]["earlier"] = [{"command": "python benchmarks/bench_methods.py --merge --methods a", "created":
                                  "2026-12-05T09:00:00"}, {"command": None, "created": "2026-12-01T08:00:00"}]
    assert ("from earlier runs (`python benchmarks/bench_methods.py --merge --methods a`, 2026-12-05; 2026-12-01; "
            "`--merge`") in suite.render_methods(doc)
