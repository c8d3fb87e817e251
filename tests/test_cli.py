"""End-to-end runs through the command line on a small generated dataset."""
import argparse
import csv
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from landmark_retrieval.cli import main
from landmark_retrieval.cli_parser import build_parser
from landmark_retrieval.io import progress
from landmark_retrieval.io.dataset import load_dataset
from landmark_retrieval.io.layout import load_verification
from landmark_retrieval.io.submission import read_submission
from landmark_retrieval.presets import PRESETS, read_run_config


@pytest.mark.slow
def test_run_resume_and_evaluate(small_dataset, tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "sub" / "submission.csv"
    args = ["run", "--data", str(small_dataset), "--work", str(work), "--out", str(out),
            "--preset", "demo", "--workers", "2", "--json"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)  # --json: stdout is one JSON document
    metrics = printed["metrics"]
    assert printed["submission"] == str(out)
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
    assert "Unknown option verify.bogus" in caplog.text and "num_to_rerank" in caplog.text  # valid ones listed


def test_console_script_and_presets(capsys):
    assert main(["presets"]) == 0
    listed = capsys.readouterr().out
    for name, preset in PRESETS.items():  # one line per preset: name and description
        assert re.search(rf"^{name} +{re.escape(preset.description)}$", listed, re.M), listed
    assert main(["presets", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {n: p.description for n, p in PRESETS.items()}
    res = subprocess.run([sys.executable, "-m", "landmark_retrieval", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and "landmark-retrieval" in res.stdout


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "landmark_retrieval", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.mark.slow
def test_json_output_quiet_and_steps_that_continue_the_run(small_dataset, tmp_path, capsys, caplog):
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    # run --json -q: stdout is only JSON (`| python -m json.tool` works), stderr has no info or bars
    res = _cli("run", "--data", str(small_dataset), "--work", str(work), "--out", str(out),
               "--preset", "demo", "--workers", "2", "--json", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    printed = json.loads(res.stdout)
    assert printed["submission"] == str(out) and out.is_file()
    assert 0 <= printed["metrics"]["verified_gap"] <= 1 and "global_map100" in printed["metrics"]
    assert subprocess.run([sys.executable, "-m", "json.tool"], input=res.stdout, text=True,
                          capture_output=True).returncode == 0
    assert "INFO" not in res.stderr and "it/s" not in res.stderr and "\r" not in res.stderr, res.stderr
    saved = read_run_config(work)
    assert saved.name == "demo" and saved.verify.ratio_test == 0.9 and saved.verify.num_workers == 2
    rows = (work / "verification.csv").read_text()

    # a step without --preset continues with the run's settings: nothing is verified again
    caplog.clear()
    assert main(["verify", "--work", str(work)]) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert re.search(r"of 0 test images \(\d+ already done\)", caplog.text), caplog.text
    assert (work / "verification.csv").read_text() == rows
    assert read_run_config(work) == saved

    # --set changes the saved settings with one warning naming exactly that key; -q after the
    # command silences info messages and progress bars (forced on here)
    caplog.clear()
    capsys.readouterr()
    previous = progress.set_progress(True)
    try:
        assert main(["verify", "--work", str(work), "--set", "verify.num_to_rerank=5", "-q"]) == 0
        assert progress.progress_enabled()  # -q is undone when the command ends
    finally:
        progress.set_progress(previous)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].endswith(": verify.num_to_rerank: 10 -> 5"), warnings
    err = capsys.readouterr().err
    assert "verify.num_to_rerank: 10 -> 5" in err and "INFO" not in err and "query/s" not in err, err
    assert read_run_config(work).verify.num_to_rerank == 5
    assert len(list(csv.DictReader(open(work / "verification.csv")))) == 5 * len(load_dataset(small_dataset).test_ids)

    # evaluate --work scores with the run's settings (5 re-ranked), without a warning
    caplog.clear()
    assert main(["evaluate", "--data", str(small_dataset), "--work", str(work), "--json"]) == 0
    assert "global_map100" in json.loads(capsys.readouterr().out)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.mark.slow
def test_demo_json(tmp_path, tmp_path_factory):
    # the demo dataset and run that test_visualize.py makes (same folders, same settings): reused
    base = tmp_path_factory.getbasetemp()
    res = _cli("demo", "--data", str(base / "lr_demo_data"), "--work", str(base / "lr_demo_work_sift"),
               "--out", str(tmp_path / "submission.csv"), "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    printed = json.loads(res.stdout)
    assert printed["submission"] == str(tmp_path / "submission.csv")
    assert printed["figure"] == str(tmp_path / "demo_match.png") and Path(printed["figure"]).is_file()
    assert set(printed["metrics"]) >= {"global_gap", "verified_gap", "global_map100", "verified_map100"}


def test_quiet_and_verbose_before_or_after_the_command():
    parser = build_parser()
    base = ["run", "--data", "d"]
    assert parser.parse_args(base).quiet is False and parser.parse_args(base).verbose is False
    assert parser.parse_args(["-q", *base]).quiet is True
    assert parser.parse_args([*base, "-q"]).quiet is True
    assert parser.parse_args(["--verbose", *base]).verbose is True
    assert parser.parse_args([*base, "-v"]).verbose is True
    assert parser.parse_args(["-q", "presets"]).quiet is True  # not clobbered by the subcommand
    with pytest.raises(SystemExit):
        main(["-q", "presets", "-v"])


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_is_plain_text_with_defaults_and_every_option_explained(capsys):
    parser = build_parser()
    commands = _subparsers(parser)
    for name, sub in [("", parser), *commands.items()]:
        text = sub.format_help()
        assert "``" not in text and ":func:" not in text and "%(" not in text, (name, text)
        for action in sub._actions:
            assert action.help and action.help.strip(), f"{name} {action.option_strings} has no help"
        # an option line without text on it or on the next line
        section = re.search(r"^options:\n(.*?)(\n\n|\Z)", text, re.M | re.S).group(1)
        lines = section.splitlines() + [""]
        for i, line in enumerate(lines):
            if re.match(r"^  -", line) and len(re.split(r"\s{2,}", line.strip())) < 2:
                assert lines[i + 1].startswith(" " * 8) and lines[i + 1].strip(), (name, line)

    def help_of(name):
        return " ".join(commands[name].format_help().split())

    assert "(default: work)" in help_of("verify")
    assert "(default: submission/submission.csv)" in help_of("run")
    assert "(default: demo)" in help_of("demo")
    assert "(default: None)" not in help_of("run") and "(default: False)" not in help_of("run")
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    assert "--workers" not in capsys.readouterr().out


def test_each_command_takes_only_the_options_it_uses():
    commands = _subparsers(build_parser())

    def options(name):
        return {o for a in commands[name]._actions for o in a.option_strings if o.startswith("--")} - {
            "--help", "--quiet", "--verbose"}

    settings = {"--work", "--wait", "--preset", "--set"}  # commands that write in --work may wait for another run
    data = {"--data", "--task"}
    run = data | {"--out", "--backend", "--model", "--workers", "--overwrite", "--json", "--time-budget", "--cluster"}
    assert options("run") == run | settings
    assert options("extract") == data | {"--backend", "--model", "--overwrite", "--candidates", "--shard",
                                         "--cluster"} | settings
    assert options("merge") == {"--work", "--wait", "--link", "--json"}
    assert options("retrieve") == data | {"--overwrite"} | settings
    assert options("verify") == {"--workers", "--overwrite"} | settings
    assert options("predict") == data | settings
    assert options("submit") == data | {"--work", "--wait", "--out", "--global-only"}
    assert options("evaluate") == {"--submission", "--solution", "--json", "--work", "--preset", "--set"} | data


def test_presets_name_shows_only_its_backends_settings(capsys):
    assert main(["presets", "demo", "--json"]) == 0
    demo = json.loads(capsys.readouterr().out)
    assert demo["name"] == "demo" and demo["extract"]["backend"] == "sift"
    assert demo["extract"]["sift"]["max_keypoints"] == 1000 and demo["extract"]["vlad"]["num_words"] == 32
    assert "delg" not in demo["extract"] and "model_path" not in demo["extract"]
    assert main(["presets", "kaggle-baseline", "--json"]) == 0
    kaggle = json.loads(capsys.readouterr().out)
    assert kaggle["extract"]["delg"] == {"scales": [0.70710677, 1.0, 1.4142135], "score_threshold": 175.0,
                                         "max_keypoints": 1000, "global_scales_ind": None, "local": True,
                                         "global_": True}
    assert "sift" not in kaggle["extract"] and kaggle["verify"]["num_to_rerank"] == 10
    assert main(["presets", "kaggle-baseline"]) == 0
    text = capsys.readouterr().out
    assert "extract.delg.score_threshold = 175.0" in text and "extract.sift" not in text
    with pytest.raises(SystemExit):
        main(["presets", "nope"])


def test_bad_values_name_the_option(tmp_path, caplog):
    assert main(["verify", "--work", str(tmp_path), "--set", "verify.num_to_rerank=abc"]) == 2
    assert "verify.num_to_rerank: expected an integer, got 'abc'" in caplog.text
    assert not (tmp_path / "config.json").exists()  # nothing saved by a command that failed to start


def test_the_two_demos_never_share_a_dataset_a_work_directory_or_outputs():
    from landmark_retrieval.cli import demo_paths

    parser = build_parser()
    recognition = demo_paths(parser.parse_args(["demo"]))
    retrieval = demo_paths(parser.parse_args(["demo", "--task", "retrieval"]))
    assert all(a != b for a, b in zip(recognition, retrieval)), (recognition, retrieval)
    assert retrieval[2].name == "demo-retrieval.csv"
    custom = demo_paths(parser.parse_args(["demo", "--task", "retrieval", "--out", "x.csv", "--work", "w"]))
    assert custom[1:] == (Path("w"), Path("x.csv"))


def test_top_level_help_speaks_of_recognition_retrieval_and_own_photos():
    text = " ".join(build_parser().format_help().split())
    for words in ("recognition", "retrieval", "match A B", "index FOLDER", "search WORK QUERY"):
        assert words in text, words


def test_a_run_refused_for_other_settings_leaves_the_saved_settings_as_they_were(small_dataset, tmp_path, caplog):
    """Changing the features' settings on a work directory stops before saving them: the next plain
    run continues with the old settings instead of failing again."""
    work, out = tmp_path / "w", tmp_path / "s.csv"
    base = ["--data", str(small_dataset), "--work", str(work), "--out", str(out)]
    assert main(["run", *base, "--preset", "demo", "--workers", "1"]) == 0
    saved = (work / "config.json").read_bytes()
    for cmd in (["run", *base], ["extract", *base[:4]]):
        assert main([*cmd, "--set", "extract.sift.max_keypoints=300"]) == 2
        assert "extracted with other settings" in caplog.text and "--overwrite" in caplog.text
        assert (work / "config.json").read_bytes() == saved
    caplog.clear()
    assert main(["run", *base]) == 0
    assert "other settings" not in caplog.text
