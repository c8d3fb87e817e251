"""The benchmark suite's bookkeeping: JSON results and the README table generated from them.

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


def test_result_files_and_readme_table(suite, tmp_path, monkeypatch):
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
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{suite.START}\nold\n{suite.END}\nrest\n")
    assert suite.update_readme(readme=readme, results_dir=tmp_path) is False
    assert readme.read_text() == f"intro\n{suite.START}\n{table}\n{suite.END}\nrest\n"
    assert suite.update_readme(readme=readme, results_dir=tmp_path, check=True) is True
    with pytest.raises(ValueError, match="benchmarks:start"):
        suite.read_block("no markers")


def test_readme_benchmark_table_is_generated_from_the_results(benchmarks):
    """README.md's benchmark block is what ``python benchmarks/run.py --readme-only`` writes
    from ``benchmarks/results/*.json``."""
    suite, run = benchmarks
    assert set(suite.load_results()) <= set(run.BENCHMARKS)
    block = suite.read_block((REPO / "README.md").read_text(encoding="utf-8"))
    assert block == suite.render_table(suite.load_results(), list(run.BENCHMARKS)), \
        "README.md's benchmark table is stale: run `python benchmarks/run.py --readme-only`"
