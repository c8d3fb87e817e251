"""The generated figures of README.md and docs/ are what the code produces.

* README.md, the demo's scores: ``make readme-numbers`` (``benchmarks/readme_numbers.py``);
* docs/presets.md, the presets: ``make docs`` (``benchmarks/docs_presets.py``);
* the benchmark and method tables in docs/: ``tests/test_benchmarks.py``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    """A script of ``benchmarks/`` (they import their sibling ``suite.py``)."""
    benchmarks = str(REPO / "benchmarks")
    sys.path.insert(0, benchmarks)
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(benchmarks)
    return module


def test_block_markers_and_rewriting():
    script = _script("readme_numbers")
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = script.read_block(text)
    assert "| GAP |" in block and "| mAP@100 |" in block
    metrics = {"global_gap": 0.5, "verified_gap": 0.75, "global_map100": 0.25, "verified_map100": 1.0}
    new = script.replace_block(text, script.render(metrics))
    assert script.read_block(new) == script.render(metrics) and "| GAP | 0.5000 | 0.7500 |" in new
    assert script.replace_block(new, block) == text  # the rest of the README is untouched
    with pytest.raises(ValueError, match="demo-numbers"):
        script.read_block("no markers")


def test_readme_names_the_test_command_and_stays_short():
    """CI runs `make test`; the README is a newcomer's page (issue 18: at most 250 lines) whose
    links into docs/ lead to files that exist."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make test" in text
    assert len(text.splitlines()) <= 250
    for name in ("methods", "presets", "own-models", "comparing-methods", "budget-and-scale-out", "benchmarks",
                 "reliability", "kaggle"):
        assert f"(docs/{name}.md)" in text and (REPO / "docs" / f"{name}.md").is_file(), name


def test_readme_python_example_guards_the_spawned_workers():
    """Verification workers start with the spawn method: a pasted example needs the main guard."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'if __name__ == "__main__":' in example
    compile(example, "README.md", "exec")


@pytest.mark.slow
def test_readme_python_example_runs_when_pasted_into_a_script(tmp_path):
    """The example, saved as a script and run with this interpreter (its relative paths under a
    scratch folder), finishes and prints the metrics; its verification spawns worker processes."""
    import subprocess

    text = (REPO / "README.md").read_text(encoding="utf-8")
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.py").write_text(example, encoding="utf-8")
    out = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "verified_gap" in out.stdout and (tmp_path / "submission" / "submission.csv").is_file()


def test_presets_doc_is_current(tmp_path):
    """docs/presets.md lists every preset of PRESETS with its description and settings, as
    ``python benchmarks/docs_presets.py`` (``make docs``) writes them."""
    script = _script("docs_presets")
    presets = script.PRESETS
    block = script.render(presets)
    for name, preset in presets.items():
        assert f"### {name}\n\n> {preset.description}." in block
    assert "verify.mutual=true" in block and "verify.ratio_test=none" in block  # --set spelling
    doc = tmp_path / "presets.md"
    doc.write_text(f"intro\n{script.START}\nold\n{script.END}\nrest\n")
    assert script.update_block(doc, (script.START, script.END), block) is False
    assert doc.read_text() == f"intro\n{script.START}\n{block}\n{script.END}\nrest\n"
    assert script.main(["--check"]) == 0, "docs/presets.md or README.md is stale: run `make docs`"


def test_readme_lists_every_preset_from_its_one_source():
    """The README's list of presets is generated from PRESETS' summaries (``make docs``)."""
    script = _script("docs_presets")
    block = script.render_list(script.PRESETS)
    assert block.splitlines() == [f"* `{name}`: {preset.summary}" + (";" if i < len(script.PRESETS) - 1 else ".")
                                  for i, (name, preset) in enumerate(script.PRESETS.items())]
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"{script.START}\n{block}\n{script.END}" in text, "README.md's presets are stale: run `make docs`"


@pytest.mark.slow
def test_readme_demo_scores_are_current(tmp_path_factory):
    """Runs the demo (about 15 s; the dataset and work folders are the ones test_visualize.py
    and test_cli.py use with the same settings, so a session runs it once)."""
    script = _script("readme_numbers")
    base = tmp_path_factory.getbasetemp()
    metrics = script.demo_metrics(base / "lr_demo_data", base / "lr_demo_work_sift")
    readme = script.read_block((REPO / "README.md").read_text(encoding="utf-8"))
    assert readme == script.render(metrics), "README.md is stale: run `make readme-numbers`"
