import csv
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from landmark_retrieval.io.submission import read_retrieval_submission, read_submission, write_submission
from landmark_retrieval.pipeline import run
from landmark_retrieval.presets import get_config


def test_submission_format_round_trip(tmp_path):
    path = write_submission({"a": (12, 1.5), "b": None, "z": (3, 0.1)}, ["b", "a", "c"], tmp_path / "s" / "sub.csv")
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["id", "landmarks"]
    assert [r[0] for r in rows[1:]] == ["b", "a", "c"]  # exactly one row per test id, in order
    assert rows[1][1] == "" and rows[3][1] == ""
    assert rows[2][1] == "12 1.5"
    assert read_submission(path) == {"a": (12, 1.5), "b": None, "c": None}


def test_write_submission_rejects_duplicate_ids(tmp_path):
    with pytest.raises(ValueError, match="Duplicate"):
        write_submission({}, ["a", "a"], tmp_path / "s.csv")


@pytest.mark.parametrize("content, message", [
    ("id,landmark\na,1 0.5\n", "header"),
    ("id,landmarks\na,1 0.5\na,2 0.5\n", "line 3.*twice"),
    ("id,landmarks\na,1\n", "line 2"),
    ("id,landmarks\na,x 0.5\n", "line 2"),
])
def test_read_submission_names_the_bad_line(tmp_path, content, message):
    p = tmp_path / "s.csv"
    p.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_submission(p)


def _empty_test_dataset(root: Path, small_dataset: Path, task: str) -> Path:
    """``small_dataset``'s train images (as ``index/`` for retrieval) and an empty ``test/`` folder."""
    root.mkdir(parents=True)
    if task == "retrieval":
        (root / "index").symlink_to(small_dataset / "train", target_is_directory=True)
    else:
        shutil.copy(small_dataset / "train.csv", root / "train.csv")
        (root / "train").symlink_to(small_dataset / "train", target_is_directory=True)
    (root / "test").mkdir()
    return root


@pytest.mark.slow
def test_an_empty_test_folder_gives_a_header_only_submission_and_a_warning(small_dataset, tmp_path, caplog):
    data = _empty_test_dataset(tmp_path / "data", small_dataset, "recognition")
    out = tmp_path / "sub" / "submission.csv"
    result = run(get_config("demo"), data, work=tmp_path / "work", out=out)
    assert result.submission == out
    assert out.read_bytes() == b"id,landmarks\r\n"  # the header line, as write_submission ends its lines
    assert read_submission(out) == {}
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "has no images" in r.getMessage()]
    assert warnings == [f"{data / 'test'} has no images: the submission has only its header "
                        "(every image file under it is a test image)"]


@pytest.mark.slow
def test_an_empty_test_folder_through_the_cli_retrieval(small_dataset, tmp_path):
    data = _empty_test_dataset(tmp_path / "data", small_dataset, "retrieval")
    out = tmp_path / "submission.csv"
    res = subprocess.run([sys.executable, "-m", "landmark_retrieval", "run", "--data", str(data), "--work",
                          str(tmp_path / "work"), "--out", str(out), "--preset", "demo", "-q"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == b"id,images\n"
    assert read_retrieval_submission(out) == {}
    assert res.stderr.count(f"{data / 'test'} has no images: the submission has only its header") == 1
