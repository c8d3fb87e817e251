"""End-to-end runs through the command line on a small generated dataset."""
import csv
import json
import subprocess
import sys

import pytest

from landmark_retrieval.cli import main
from landmark_retrieval.dataset import load_dataset
from landmark_retrieval.submit import read_submission
from landmark_retrieval.verify import load_verification


@pytest.mark.slow
def test_run_resume_and_evaluate(small_dataset, tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "sub" / "submission.csv"
    args = ["run", "--data", str(small_dataset), "--work", str(work), "--out", str(out),
            "--preset", "demo", "--workers", "2", "--json"]
    assert main(args) == 0
    metrics = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert 0 <= metrics["global_gap"] <= 1 and metrics["verified_gap"] >= metrics["global_gap"]
    ds = load_dataset(small_dataset)
    sub = read_submission(out)
    assert list(sub) == ds.test_ids  # exactly one row per test id
    assert sum(v is not None for v in sub.values()) == len(ds.test_ids)
    rows = list(csv.DictReader(open(work / "verification.csv")))
    assert len(rows) == len(ds.test_ids) * 10

    # interrupt verification half-way (last line cut), then resume: only the rest is verified
    lines = (work / "verification.csv").read_text().splitlines(keepends=True)
    (work / "verification.csv").write_text("".join(lines[: len(lines) // 2]) + lines[len(lines) // 2][:7])
    before = load_verification(work / "verification.csv")
    assert main(args) == 0
    after = load_verification(work / "verification.csv")
    assert set(after) == set(ds.test_ids) and all(after[q] == v for q, v in before.items() if len(v) == 10)
    assert read_submission(out) == sub  # same result after the resume

    # the module entry point scores the submission
    res = subprocess.run([sys.executable, "-m", "landmark_retrieval", "evaluate", "--submission", str(out),
                          "--solution", str(small_dataset / "solution.csv"), "--json"],
                         capture_output=True, text=True, check=True)
    assert json.loads(res.stdout)["gap"] == pytest.approx(metrics["verified_gap"])


@pytest.mark.slow
def test_kaggle_baseline_preset_with_the_classical_backend(small_dataset, tmp_path):
    out = tmp_path / "s.csv"
    assert main(["run", "--data", str(small_dataset), "--work", str(tmp_path / "w"), "--out", str(out),
                 "--preset", "kaggle-baseline", "--backend", "sift", "--workers", "1"]) == 0
    assert len(read_submission(out)) == len(load_dataset(small_dataset).test_ids)


def test_cli_errors_are_reported_not_raised(tmp_path, caplog):
    assert main(["run", "--data", str(tmp_path / "nope"), "--work", str(tmp_path / "w")]) == 2
    assert "does not exist" in caplog.text
    assert main(["extract", "--data", str(tmp_path), "--set", "verify.bogus=1"]) == 2


def test_console_script_and_presets(capsys):
    assert main(["presets"]) == 0
    assert "kaggle-baseline" in capsys.readouterr().out
    res = subprocess.run([sys.executable, "-m", "landmark_retrieval", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and "landmark-retrieval" in res.stdout
