import csv

import pytest

from landmark_retrieval.io.submission import read_submission, write_submission


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
