"""Property-based fuzzing of every CSV reader and of the ``--set`` parser (issue #22).

Whatever bytes a CSV file holds (arbitrary bytes, arbitrary text, near-valid CSV with random ids
and fields, extra or missing columns, BOMs, NULs, CRLF, quotes, very long fields, non-UTF-8
bytes), each reader either returns its result or raises its documented error: a one-line
``ValueError`` naming the file. Whatever string is given to ``--set`` (and whatever key and value
is given to ``apply_settings``), the configuration either applies or raises ``ValueError`` or
``KeyError``. Any other exception (IndexError, KeyError, UnicodeDecodeError, csv.Error,
TypeError, OverflowError, ...) is a bug in the reader or parser.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from landmark_retrieval.backends.ensemble import MEMBER_OPTIONS
from landmark_retrieval.backends.registry import BACKENDS
from landmark_retrieval.config import Config, extract_sections
from landmark_retrieval.evaluate import score_submission
from landmark_retrieval.io.dataset import load_dataset
from landmark_retrieval.io.submission import (
    read_retrieval_submission,
    read_submission,
    write_retrieval_submission,
    write_submission,
)
from landmark_retrieval.io.tables import (
    RetrievalSolution,
    Solution,
    read_retrieval_solution_csv,
    read_solution_csv,
    read_train_csv,
)
from landmark_retrieval.overrides import apply_settings, flatten, parse_overrides
from landmark_retrieval.presets import PRESETS, get_config

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELD_LIMIT = csv.field_size_limit()


@contextmanager
def _file(content: bytes, name: str = "fuzz.csv") -> Iterator[Path]:
    """``content`` written to a fresh file (a new temporary folder per example)."""
    with tempfile.TemporaryDirectory(prefix="lr-fuzz-") as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        yield path


def _check(reader: Callable[[Path], object], content: bytes, name: str = "fuzz.csv") -> object:
    """Call ``reader`` on a file holding ``content``: its result, or None when it raised the
    documented error (a one-line ValueError naming the file). Any other exception propagates."""
    with _file(content, name) as path:
        try:
            return reader(path)
        except ValueError as exc:
            message = str(exc)
            assert str(path) in message, f"the error does not name the file: {message!r}"
            assert "\n" not in message and "\r" not in message, f"the error is not one line: {message!r}"
            return None


# ---------------------------------------------------------------------------------------------
# strategies: arbitrary bytes and text, and near-valid CSV
# ---------------------------------------------------------------------------------------------

IDS = st.one_of(
    st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),  # GLR ids
    st.text(min_size=0, max_size=20),  # anything, commas, quotes and newlines included
    st.sampled_from(["", "a", "ab", "a/b/c", "a\\bc", "\ufeffabc", "id", "a\x00bc", "abc\r\ndef", '"abc"']),
)
INTS = st.integers(min_value=-(2 ** 70), max_value=2 ** 70).map(str)
FLOATS = st.floats(allow_nan=True, allow_infinity=True).map(repr)
FIELDS = st.one_of(
    IDS, INTS, FLOATS,
    st.tuples(INTS, FLOATS).map(" ".join),  # "<landmark> <score>"
    st.lists(st.one_of(INTS, IDS), max_size=5).map(" ".join),  # landmarks / images lists
    st.sampled_from(["Public", "Private", "Ignored", "", " ", "1 0.5 2", "x 0.5", "1 x", "1_0 0.5", "nan",
                     "1 nan", "1 inf", "1 1e999", "\u0661 0.5", "1,2", '"', '""', '"a""b"', "a\"b"]),
    st.integers(min_value=FIELD_LIMIT - 2, max_value=FIELD_LIMIT + 3).map(lambda n: "7" * n),  # very long
)
HEADERS = st.one_of(
    st.sampled_from([
        ["id", "landmark_id"], ["id", "landmarks"], ["id", "landmarks", "Usage"], ["id", "images"],
        ["id", "images", "Usage"], ["id"], ["landmarks", "id"], ["id", "id", "landmarks"], ["id", " landmarks "],
        ["id", "landmark_id", "extra"], ["\ufeffid", "landmarks"], [],
    ]),
    st.lists(st.sampled_from(["id", "landmark_id", "landmarks", "images", "Usage", "", "x"]), max_size=4),
)
TERMINATORS = st.sampled_from(["\n", "\r\n", "\r", "\n\n"])


@st.composite
def near_valid_csv(draw) -> bytes:
    """A CSV file close to one of the readers' formats, with random defects."""
    header = draw(HEADERS)
    width = len(header)
    rows: List[List[str]] = [header]
    for _ in range(draw(st.integers(0, 6))):
        n = draw(st.sampled_from([width, width, width, max(width - 1, 0), width + 1]))
        rows.append([draw(FIELDS) for _ in range(n)])
    if draw(st.booleans()):  # the csv module's quoting
        buf = io.StringIO(newline="")
        csv.writer(buf, lineterminator=draw(TERMINATORS)).writerows(rows)
        text = buf.getvalue()
    else:  # naive joining: stray quotes, commas and newlines inside fields
        text = draw(TERMINATORS).join(",".join(r) for r in rows)
    if draw(st.booleans()):
        text += draw(TERMINATORS)
    data = text.encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data  # BOM
    defect = draw(st.sampled_from(["", "", "nul", "latin1", "invalid", "cut"]))
    if data and defect:
        at = draw(st.integers(0, len(data)))
        insert = {"nul": b"\x00", "latin1": "\u00e9".encode("latin-1"), "invalid": b"\xff\xfe\x80", "cut": b""}[defect]
        data = data[:at] + insert + (data[at:] if defect != "cut" else b"")
    return data


CONTENTS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", errors="surrogatepass")),
    near_valid_csv(),
)

VALID_SOLUTION = b"id,landmarks,Usage\nfff0000000000001,5,Public\nfff0000000000002,,Private\n"
VALID_RETRIEVAL_SOLUTION = b"id,images,Usage\nfff0000000000001,abc def,Public\nfff0000000000002,,Private\n"


# ---------------------------------------------------------------------------------------------
# the dataset's tables: train.csv, solution.csv of both tasks
# ---------------------------------------------------------------------------------------------

@FUZZ
@given(CONTENTS)
@example(b"id,landmark_id\n" + b"a" * (FIELD_LIMIT + 1) + b",1\n")
@example(b'id,landmark_id\nabc,"1\n' + b"x" * (FIELD_LIMIT + 1))
@example(b"id,landmark_id\nabc,1\n\xff\n")
@example(b"\xef\xbb\xbfid,landmark_id\r\nabc,1\r\n")
def test_read_train_csv_returns_or_raises_value_error(content):
    train = _check(read_train_csv, content, "train.csv")
    if train is not None:
        assert isinstance(train, pd.DataFrame) and list(train.columns)[:2] == ["id", "landmark_id"]
        assert str(train["landmark_id"].dtype) == "int64" and train["id"].is_unique


@FUZZ
@given(CONTENTS)
@example(b"id,landmarks\nabc," + b"1 " * FIELD_LIMIT + b"\n")
@example(b"id,landmarks,Usage\nabc,1\n")
@example(b"id,landmarks,Usage\r\nabc,1 2,\r\n\r\n")
def test_read_solution_csv_returns_or_raises_value_error(content):
    solution = _check(read_solution_csv, content, "solution.csv")
    if solution is not None:
        assert isinstance(solution, Solution)
        assert all(isinstance(v, int) for labels in solution.landmarks.values() for v in labels)
        assert set(solution.usage) <= set(solution.landmarks)


@FUZZ
@given(CONTENTS)
@example(b"id,images\nabc,\x00\n")
@example(b"id,images,Usage\nabc,a b\n")
def test_read_retrieval_solution_csv_returns_or_raises_value_error(content):
    solution = _check(read_retrieval_solution_csv, content, "solution.csv")
    if solution is not None:
        assert isinstance(solution, RetrievalSolution)
        assert all(isinstance(v, str) for images in solution.images.values() for v in images)


FILE_NAMES = st.tuples(
    st.binary(min_size=1, max_size=30).map(lambda b: b.replace(b"/", b"_").replace(b"\x00", b"_")),
    st.sampled_from([b".jpg", b".JPEG", b".png", b".txt", b"", b".jpg.tmp"]),
).map(b"".join).filter(lambda name: name not in (b".", b".."))


@pytest.mark.skipif(sys.platform != "linux", reason="file names of any bytes")
@FUZZ
@given(st.lists(st.tuples(st.sampled_from([b"", b"a/b/c", b"\xff\xfe", b"sub dir/x"]), FILE_NAMES), max_size=6),
       st.sampled_from(["recognition", "retrieval"]), st.binary(max_size=60))
def test_listing_test_images_with_any_file_names(files, task, solution):
    """The test (and index) images are listed from the folder: any file names, and any solution.csv
    (which only disables scoring when it cannot be read)."""
    with tempfile.TemporaryDirectory(prefix="lr-fuzz-") as folder:
        root = Path(folder)
        (root / "train.csv").write_text("id,landmark_id\nabc,1\n")
        (root / "solution.csv").write_bytes(solution)
        for split in ("test", "index") if task == "retrieval" else ("test",):
            os.makedirs(os.path.join(os.fsencode(root / split)), exist_ok=True)
            for sub, name in files:
                directory = os.path.join(os.fsencode(root / split), sub)
                os.makedirs(directory, exist_ok=True)
                with open(os.path.join(directory, name), "wb") as fh:
                    fh.write(b"not an image")
        dataset = load_dataset(root)
        assert dataset.task == task
        for split in ("test", "index") if task == "retrieval" else ("test",):
            ids = dataset.ids(split)
            assert len(set(ids)) == len(ids)
            for image_id in ids:
                image_id.encode("utf-8")  # names that are not UTF-8 are skipped
                assert dataset.path(split, image_id).is_file()
        assert (dataset.solution is None) == (dataset.solution_error is not None)


# ---------------------------------------------------------------------------------------------
# submissions of both tasks, and scoring them
# ---------------------------------------------------------------------------------------------

@FUZZ
@given(CONTENTS)
@example(b"id,landmarks\nabc,1 0.5\n\xff\n")
@example(b"id,landmarks\nabc,1 0\x005\n")
@example(b"\xef\xbb\xbfid,landmarks\r\nabc,1 0.5\r\n")
@example(b"id,landmarks\nabc,1 nan\n")
@example(b"id,landmarks\nabc,1 " + b"5" * (FIELD_LIMIT + 1) + b"\n")
@example(b'id,landmarks\nabc,"1 0.5\n')
def test_read_submission_returns_or_raises_value_error(content):
    predictions = _check(read_submission, content, "submission.csv")
    if predictions is not None:
        for value in predictions.values():
            assert value is None or (isinstance(value[0], int) and isinstance(value[1], float)
                                     and math.isfinite(value[1]))


@FUZZ
@given(CONTENTS, st.booleans())
@example(b"id,images\nabc,a b\n\xff\n", False)
@example(b"\xef\xbb\xbfid,images\nabc,a b\n", True)
@example(b"id,images\nabc," + b"a" * (FIELD_LIMIT + 1) + b"\n", False)
def test_read_retrieval_submission_returns_or_raises_value_error(content, with_index):
    index = {"a", "b", "abc", "def"} if with_index else None
    rankings = _check(lambda p: read_retrieval_submission(p, index), content, "submission.csv")
    if rankings is not None:
        assert all(len(ids) <= 100 for ids in rankings.values())
        assert index is None or all(i in index for ids in rankings.values() for i in ids)


@FUZZ
@given(CONTENTS, st.booleans())
@example(b"\xff\xfeid,landmarks\n", False)
@example(b"id,images\xff\n", True)
@example(b"id,landmarks\nfff0000000000001,5 nan\n", False)
@example(b"id,landmarks\nfff0000000000001,5 1e999\n", False)
def test_score_submission_returns_or_raises_value_error(content, retrieval):
    """The submission is fuzzed and scored against a valid solution (of either task)."""
    with _file(VALID_RETRIEVAL_SOLUTION if retrieval else VALID_SOLUTION, "solution.csv") as solution:
        metrics = _check(lambda p: score_submission(p, solution), content, "submission.csv")
    if metrics is not None:
        assert all(isinstance(v, (int, float)) for v in metrics.values())


@FUZZ
@given(CONTENTS, st.sampled_from([b"id,landmarks\nfff0000000000001,5 0.5\n", b"id,images\nfff0000000000001,abc\n"]))
def test_score_submission_with_a_fuzzed_solution(content, submission):
    with _file(submission, "submission.csv") as sub:
        _check(lambda p: score_submission(sub, p), content, "solution.csv")


#: test ids are file names: no NUL, no '/'
SUBMISSION_IDS = st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"),
                                  max_size=12), unique=True, max_size=8)


@FUZZ
@given(SUBMISSION_IDS, st.data())
def test_written_submissions_read_back_identically(ids, data):
    predictions = {i: data.draw(st.one_of(st.none(), st.tuples(st.integers(0, 2 ** 40), st.floats(0, 1e6))))
                   for i in ids}
    rankings = {i: data.draw(st.lists(st.text("abcdef0123456789", min_size=1, max_size=16), max_size=5))
                for i in ids}
    with tempfile.TemporaryDirectory(prefix="lr-fuzz-") as folder:
        assert read_submission(write_submission(predictions, ids, Path(folder) / "r.csv")) == predictions
        assert read_retrieval_submission(write_retrieval_submission(rankings, ids, Path(folder) / "i.csv")) == rankings


def test_a_retrieval_submission_id_with_a_carriage_return_reads_back(tmp_path):
    path = write_retrieval_submission({"a\rb": ["x"]}, ["a\rb"], tmp_path / "s.csv")
    assert read_retrieval_submission(path) == {"a\rb": ["x"]}


# ---------------------------------------------------------------------------------------------
# --set section.option=value, apply_settings
# ---------------------------------------------------------------------------------------------

OPTIONS = sorted(flatten(Config().to_dict()))
SECTIONS = sorted({k.rsplit(".", 1)[0] for k in OPTIONS if "." in k})
KEYS = st.one_of(
    st.sampled_from(OPTIONS), st.sampled_from(SECTIONS),
    st.sampled_from(OPTIONS).map(lambda k: k + "x"), st.sampled_from(OPTIONS).map(lambda k: k.upper()),
    st.sampled_from(OPTIONS).map(lambda k: " " + k.replace(".", " . ")), st.text(max_size=20),
)
VALUES = st.one_of(
    st.text(max_size=20), INTS, FLOATS,
    st.sampled_from(["", "none", "None", "null", "true", "false", "yes", "0", "-1", "1e999", "-1e999", "nan", "inf",
                     "9" * 40, "0.5,1.0", "1,2,3", "(1,2)", "[]", "[1, 2]", "{}", '[{"backend": "sift"}]',
                     '[{"backend": "bogus", "weight": "x"}]', '{"a": 1}', '[{"weight": 1e999}]', "1,,2", ",",
                     "sift", "delg", "embedding", "ensemble", "lightglue", "nn", "all", "candidates", "8h30m",
                     "-5m", "0s", "1h" * 5, "faiss", "hnsw", "ivfpq", "homography", "fundamental", "degensac"]),
)


@FUZZ
@given(st.text(max_size=60))
@example("=")
@example(".=")
@example("a.=1")
@example("verify.num_to_rerank")
@example("verify.num_to_rerank=1e999")
def test_any_set_string_applies_or_raises_value_or_key_error(item):
    try:
        conf = get_config("default", [item])
    except (ValueError, KeyError):
        return
    assert isinstance(conf, Config)


@FUZZ
@given(st.sampled_from(sorted(PRESETS)), st.lists(st.tuples(KEYS, VALUES).map("=".join), min_size=1, max_size=3))
@example("default", ["verify.num_to_rerank=nan"])
@example("default", ["retrieve.k=1e999"])
@example("default", ["run.time_budget=inf"])
@example("default", ["run.time_budget=nan"])
@example("default", ["extract.ensemble.members=[{\"backend\": \"sift\", \"weight\": \"x\"}]"])
@example("default", ["verify", "verify.num_to_rerank=2"])
@example("default", ["verify.num_to_rerank=2", "verify.num_to_rerank.x=2"])
def test_set_strings_on_every_preset_apply_or_raise_value_or_key_error(preset, items):
    try:
        parsed = parse_overrides(items)
    except ValueError:
        return
    assert isinstance(parsed, dict)
    try:
        conf = get_config(preset, items)
    except (ValueError, KeyError):
        return
    assert isinstance(conf, Config)


JSON_LIKE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10), VALUES),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)


def _nested(key: str, value: object) -> dict:
    """``"a.b.c", v`` -> ``{"a": {"b": {"c": v}}}``."""
    for part in reversed(key.split(".")[1:]):
        value = {part: value}
    return {key.split(".")[0]: value}


@FUZZ
@given(KEYS, JSON_LIKE, st.booleans())
@example("verify.num_to_rerank", float("nan"), True)
@example("verify.num_to_rerank", float("inf"), True)
@example("verify.num_to_rerank", 10 ** 30, True)
@example("extract.delg.scales", [float("inf")], True)
@example("extract.ensemble.members", [{"backend": "sift", "weight": float("nan")}], True)
@example("run.time_budget", float("nan"), True)
@example("verify", 3, False)
@example("extract.sift", None, True)
def test_apply_settings_on_a_fresh_config_applies_or_raises_value_or_key_error(key, value, nested):
    conf = Config()
    try:
        apply_settings(conf, _nested(key, value) if nested else {key: value}, "fuzz")
    except (ValueError, KeyError):
        return
    try:  # what get_config does next: the applied settings are checked
        get_config(conf)
    except (ValueError, KeyError):
        return


MEMBER_KEYS = st.sampled_from(["weight", "name", *MEMBER_OPTIONS, *extract_sections(), "bogus", ""])
#: a member's backend: absent, a string, or another JSON value
MEMBER_BACKENDS = st.one_of(st.sampled_from([*BACKENDS, "bogus", ""]), st.text(max_size=5),
                            st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                                                 max_size=1))


@st.composite
def ensemble_members(draw) -> list:
    members = []
    for _ in range(draw(st.integers(0, 3))):
        record = draw(st.dictionaries(MEMBER_KEYS, JSON_LIKE, max_size=3))
        if draw(st.integers(0, 9)):  # usually a backend
            record["backend"] = draw(MEMBER_BACKENDS)
        members.append(record)
    return members


@FUZZ
@given(ensemble_members(), st.booleans(), st.sampled_from(["nn", "lightglue"]))
@example([{"backend": "sift", "weight": float("nan")}], True, "nn")
@example([{"backend": "sift", "sift": {"max_keypoints": [1]}}], True, "nn")
@example([{"backend": "sift", "name": {"a": 1}}, {"backend": "sift"}], True, "lightglue")
def test_ensemble_members_apply_or_raise_value_or_key_error(members, as_json, matcher):
    """``--set extract.ensemble.members=JSON`` (or the records from Python) with random records."""
    value = json.dumps(members) if as_json else members
    conf = Config()
    try:
        apply_settings(conf, {"extract": {"backend": "ensemble", "ensemble": {"members": value}},
                              "verify": {"matcher": matcher}}, "fuzz")
        get_config(conf)
    except (ValueError, KeyError):
        return


@pytest.mark.parametrize("backend", [[1], {"a": 1}])
def test_an_ensemble_member_backend_that_is_not_a_string_is_a_value_error(backend):
    with pytest.raises(ValueError, match=r"extract\.ensemble\.members\[0\]\.backend"):
        get_config("default", ["extract.backend=ensemble",
                               "extract.ensemble.members=" + json.dumps([{"backend": backend}])])
