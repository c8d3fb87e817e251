"""The figures in README.md are what the code produces (regenerate: ``make readme-numbers``)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("readme_numbers", REPO / "benchmarks" / "readme_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_block_markers_and_rewriting():
    script = _script()
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = script.read_block(text)
    assert "| GAP |" in block and "| mAP@100 |" in block
    metrics = {"global_gap": 0.5, "verified_gap": 0.75, "global_map100": 0.25, "verified_map100": 1.0}
    new = script.replace_block(text, script.render(metrics))
    assert script.read_block(new) == script.render(metrics) and "| GAP | 0.5000 | 0.7500 |" in new
    assert script.replace_block(new, block) == text  # the rest of the README is untouched
    with pytest.raises(ValueError, match="demo-numbers"):
        script.read_block("no markers")


@pytest.mark.slow
def test_readme_demo_scores_are_current(tmp_path_factory):
    """Runs the demo (about 15 s; the dataset and work folders are the ones test_visualize.py
    and test_cli.py use with the same settings, so a session runs it once)."""
    script = _script()
    base = tmp_path_factory.getbasetemp()
    metrics = script.demo_metrics(base / "lr_demo_data", base / "lr_demo_work_sift")
    readme = script.read_block((REPO / "README.md").read_text(encoding="utf-8"))
    assert readme == script.render(metrics), "README.md is stale: run `make readme-numbers`"
