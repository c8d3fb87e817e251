"""Bad dataset inputs fail loudly and precisely: symlinked folders, non-UTF-8 names, broken CSVs.

Every error must name the file (and the line) and say what was expected; a broken solution.csv
must only disable scoring; a mistyped DATA must never become the demo dataset.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import List

import numpy as np
import pytest

from landmark_retrieval import kaggle
from landmark_retrieval.evaluate import evaluate_run
from landmark_retrieval.io.dataset import find_images, image_path, load_dataset
from landmark_retrieval.io.tables import Solution, read_solution_csv, read_train_csv

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture
def warnings_log(caplog):
    """Records of the package logger (it does not propagate to the root logger)."""
    logger = logging.getLogger("landmark_retrieval")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="landmark_retrieval")
    yield caplog
    logger.removeHandler(caplog.handler)


def _messages(caplog, level: int = logging.WARNING) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"jpeg")
    return path


def _dataset(root: Path, solution: bytes = None) -> Path:
    """A minimal GLR layout: two train rows, one test image, optionally a solution.csv."""
    (root / "train.csv").parent.mkdir(parents=True, exist_ok=True)
    (root / "train.csv").write_text("id,landmark_id\ntrain0000000001,5\ntrain0000000002,6\n")
    _touch(image_path(root, "train", "train0000000001"))
    _touch(image_path(root, "train", "train0000000002"))
    _touch(image_path(root, "test", "fff0000000000001"))
    if solution is not None:
        (root / "solution.csv").write_bytes(solution)
    return root


# ---------------------------------------------------------------------------------------------
# scanning image folders
# ---------------------------------------------------------------------------------------------
def test_symlink_to_the_dataset_root_does_not_make_train_images_test_ids(tmp_path, warnings_log):
    root = _dataset(tmp_path / "data")
    link = root / "test" / "f" / "root_link"
    os.symlink(root, link)  # test/f/root_link -> DATA: train/ would be scanned as test images
    ds = load_dataset(root)
    assert ds.test_ids == ["fff0000000000001"]
    assert _messages(warnings_log) == [
        f"Skipping directory symlink {link} -> {root}: symlinked folders are not followed "
        "(replace the link by the folder or its files)"]


def test_symlink_loops_end_with_one_warning_each(tmp_path, warnings_log):
    test = tmp_path / "test"
    img = _touch(test / "a" / "b" / "c" / "abc0000000000000.jpg")
    os.symlink(test / "a", test / "a" / "b" / "loop_up")  # a/b/loop_up -> a/ : an endless cycle
    os.symlink("..", test / "a" / "b" / "c" / "loop_rel")  # relative link to its parent
    os.symlink(test / "x", test / "x")  # a link to itself (ELOOP)
    os.symlink(tmp_path / "nowhere", test / "dangling")
    assert find_images(test) == {"abc0000000000000": img}
    warnings = _messages(warnings_log)
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"Skipping directory symlink {test / 'a' / 'b' / 'loop_up'} -> {test / 'a'}:")
    assert warnings[1].startswith(f"Skipping directory symlink {test / 'a' / 'b' / 'c' / 'loop_rel'} -> ..:")


def test_top_folder_and_file_symlinks_are_followed(tmp_path, warnings_log):
    real = tmp_path / "elsewhere"
    a = _touch(real / "a" / "b" / "c" / "abc0000000000001.jpg")
    outside = _touch(tmp_path / "outside" / "photo.jpg")
    os.symlink(outside, real / "a" / "b" / "c" / "abc0000000000002.jpg")  # a file symlink: kept
    os.symlink(real, tmp_path / "test")  # DATA/test itself a symlink: scanned
    found = find_images(tmp_path / "test")
    assert found == {"abc0000000000001": tmp_path / "test" / "a" / "b" / "c" / a.name,
                     "abc0000000000002": tmp_path / "test" / "a" / "b" / "c" / "abc0000000000002.jpg"}
    assert _messages(warnings_log) == []


def test_non_utf8_file_and_folder_names_are_skipped_with_a_warning(tmp_path, warnings_log):
    test = tmp_path / "test"
    good = _touch(test / "a" / "b" / "c" / "abc0000000000000.jpg")
    bytes_dir = os.fsencode(test / "a" / "b" / "c")
    with open(os.path.join(bytes_dir, b"\xff\xfe.jpg"), "wb") as fh:
        fh.write(b"jpeg")
    os.makedirs(os.path.join(os.fsencode(test), b"d\xe9j\xe0"))
    with open(os.path.join(os.fsencode(test), b"d\xe9j\xe0", b"abd0000000000000.jpg"), "wb") as fh:
        fh.write(b"jpeg")
    found = find_images(test)
    assert found == {"abc0000000000000": good}
    for path in found.values():
        str(path).encode("utf-8")  # every path returned can be written to a UTF-8 file
    folder, image = b"d\xe9j\xe0", b"\xff\xfe.jpg"
    warnings = _messages(warnings_log)
    assert warnings == [
        f"Skipping folder {folder!r} in {os.fsencode(test)!r}: its name is not valid UTF-8 (rename it)",
        f"Skipping image {image!r} in {bytes_dir!r}: its file name is not valid UTF-8 (rename it)",
    ]
    assert "b'd\\xe9j\\xe0'" in warnings[0] and "b'\\xff\\xfe.jpg'" in warnings[1]


def test_a_non_utf8_test_image_does_not_break_load_dataset(tmp_path, warnings_log):
    root = _dataset(tmp_path / "data")
    with open(os.path.join(os.fsencode(root / "test" / "f"), b"\xff.jpg"), "wb") as fh:
        fh.write(b"jpeg")
    assert load_dataset(root).test_ids == ["fff0000000000001"]
    assert any("b'\\xff.jpg'" in m for m in _messages(warnings_log))


# ---------------------------------------------------------------------------------------------
# train.csv
# ---------------------------------------------------------------------------------------------
def _train(tmp_path: Path, content: bytes) -> Path:
    p = tmp_path / "train.csv"
    p.write_bytes(content)
    return p


def _error(reader, path: Path) -> str:
    with pytest.raises(ValueError) as info:
        reader(path)
    return str(info.value)


def test_train_csv_empty_and_header_only(tmp_path):
    p = _train(tmp_path, b"")
    assert _error(read_train_csv, p) == (
        f"{p} is empty: expected a header 'id,landmark_id' and one row per train image")
    p = _train(tmp_path, b"\n \n")
    assert _error(read_train_csv, p).startswith(f"{p} is empty")
    p = _train(tmp_path, b"id,landmark_id\n")
    assert _error(read_train_csv, p) == (
        f"{p} has no rows: expected one row per train image after the header 'id,landmark_id'")


def test_train_csv_missing_file_and_columns(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        read_train_csv(tmp_path / "nope.csv")
    assert str(tmp_path / "nope.csv") in str(info.value) and "id,landmark_id" in str(info.value)
    p = _train(tmp_path, b"image,landmark_id\nabc1,5\n")
    assert _error(read_train_csv, p) == (
        f"{p} lacks column(s) ['id']: found header ['image', 'landmark_id'], expected 'id,landmark_id'")
    p = _train(tmp_path, b"id,landmark_id,id\nabc1,5,abc1\n")
    assert _error(read_train_csv, p) == (
        f"{p}: column(s) ['id'] appear more than once in the header ['id', 'landmark_id', 'id']")


def test_train_csv_ragged_rows_name_the_line(tmp_path):
    p = _train(tmp_path, b"id,landmark_id\nabc1,5\nabc2,6,7\n")
    msg = _error(read_train_csv, p)
    assert msg.startswith(f"{p}, line 3: expected 2 fields (id,landmark_id) as in the header, found 3")
    assert "quote fields that contain commas" in msg
    p = _train(tmp_path, b"id,landmark_id\nabc1,5\n\nabc2\n")  # blank line skipped, line numbers kept
    assert _error(read_train_csv, p).startswith(
        f"{p}, line 4: expected 2 fields (id,landmark_id) as in the header, found 1")


def test_train_csv_malformed_quoting_names_the_line(tmp_path):
    p = _train(tmp_path, b'id,landmark_id\nabc1,5\n"abc2,6\nabc3,7\n')  # unterminated quote
    msg = _error(read_train_csv, p)
    assert msg.startswith(f"{p}, line 3: malformed CSV (unexpected end of data)")
    assert 'double the quotes inside them ("")' in msg
    p = _train(tmp_path, b'id,landmark_id\n"abc"1,5\n')
    assert _error(read_train_csv, p).startswith(f"{p}, line 2: malformed CSV (',' expected after '\"')")


@pytest.mark.parametrize("content, where", [
    (b"id,landmark_id\nabc1,5\nabc2,\x00\x00\n", "it contains NUL bytes (line 3)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "it contains NUL bytes (line 3)"),  # a PNG
    (b"id,landmark_id\nabc1,5\n\xe9t\xe9,6\n", "byte b'\\xe9' on line 3 is not UTF-8"),
])
def test_train_csv_binary_content(tmp_path, content, where):
    p = _train(tmp_path, content)
    assert _error(read_train_csv, p) == (
        f"{p} is not a UTF-8 CSV text file: expected a header 'id,landmark_id' and one row per train image "
        f"(re-export it as UTF-8 CSV); {where}")


def test_train_csv_bad_rows(tmp_path):
    p = _train(tmp_path, b"id,landmark_id\nabc1,5\nabc2,6\nabc1,7\n")
    assert _error(read_train_csv, p) == (
        f"{p}, line 4: duplicate id 'abc1' (first on line 2); every train image must be listed once")
    for value in ("five", "1.5", "", "1e3", "0x10", "99999999999999999999"):
        p = _train(tmp_path, f"id,landmark_id\nabc1,5\nabc2,{value}\n".encode())
        assert _error(read_train_csv, p) == (
            f"{p}, line 3: landmark_id {value!r} of id 'abc2' is not an integer; landmark_id must be an integer")
    p = _train(tmp_path, b"id,landmark_id\nabc1,5\nab,6\n")
    assert _error(read_train_csv, p) == (
        f"{p}, line 3: id 'ab' is shorter than 3 characters; ids must be strings of at least 3 characters "
        "(GLR ids are 16 hex characters)")
    p = _train(tmp_path, b"id,landmark_id\n../../etc/passwd,5\n")
    msg = _error(read_train_csv, p)
    assert msg.startswith(f"{p}, line 2: id '../../etc/passwd' contains a path separator")


def test_train_csv_accepts_extra_columns_bom_crlf_and_keeps_types(tmp_path):
    p = _train(tmp_path, b"\xef\xbb\xbfurl,id,landmark_id\r\nhttp://x,abc1, 5\r\n\r\nhttp://y,abc2,-6\r\n")
    df = read_train_csv(p)
    assert list(df.columns) == ["id", "landmark_id"]
    assert df["id"].tolist() == ["abc1", "abc2"] and all(type(i) is str for i in df["id"])
    assert df["landmark_id"].dtype == np.int64 and df["landmark_id"].tolist() == [5, -6]


def test_train_csv_errors_far_into_a_large_file_name_the_right_line(tmp_path):
    """Rows are parsed by chunks of 65,536: line numbers stay exact across chunks and blank lines."""
    rows = [f"id{i:014d},{i % 7}" for i in range(70_000)]
    body = "id,landmark_id\n" + "\n".join(rows[:30_000]) + "\n\n  \n" + "\n".join(rows[30_000:]) + "\n"
    p = _train(tmp_path, body.encode())
    df = read_train_csv(p)  # blank and whitespace-only lines are skipped
    assert len(df) == 70_000 and df["id"].iloc[-1] == "id00000000069999" and df["landmark_id"].iloc[-1] == 69_999 % 7
    # ragged row 69,000 (after the 2 blank lines: line 69,000 + 1 + 2)
    p = _train(tmp_path, body.replace("id00000000068999,", "id00000000068999,1,").encode())
    assert _error(read_train_csv, p).startswith(f"{p}, line 69003: expected 2 fields (id,landmark_id) as in the header")
    p = _train(tmp_path, body.replace("id00000000069998,", "id00000000000003,").encode())
    assert _error(read_train_csv, p).startswith(
        f"{p}, line 70002: duplicate id 'id00000000000003' (first on line 5)")
    p = _train(tmp_path, body.replace("id00000000066666,5", "id00000000066666,-1x").encode())
    assert _error(read_train_csv, p).startswith(f"{p}, line 66670: landmark_id '-1x' of id 'id00000000066666'")


def test_train_ids_with_commas_quotes_and_newlines_round_trip(tmp_path):
    ids = ["abc,def", 'quo"ted"', "multi\nline id", "  spaced  ", "plain0000000000"]
    p = tmp_path / "train.csv"
    with open(p, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "landmark_id"])
        w.writerows([(i, n) for n, i in enumerate(ids)])
    df = read_train_csv(p)
    assert df["id"].tolist() == ids and df["landmark_id"].tolist() == list(range(len(ids)))
    # line numbers count the physical lines of a multi-line field
    with open(p, "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(["abc,def", 9])
    assert _error(read_train_csv, p).startswith(f"{p}, line 8: duplicate id 'abc,def' (first on line 2)")


# ---------------------------------------------------------------------------------------------
# solution.csv
# ---------------------------------------------------------------------------------------------
def _solution(tmp_path: Path, content: bytes) -> Path:
    p = tmp_path / "solution.csv"
    p.write_bytes(content)
    return p


def test_solution_header_only_is_an_empty_solution(tmp_path):
    s = read_solution_csv(_solution(tmp_path, b"id,landmarks,Usage\n"))
    assert s.landmarks == {} and s.usage == {}


def test_solution_errors(tmp_path):
    p = _solution(tmp_path, b"")
    assert _error(read_solution_csv, p) == (
        f"{p} is empty: expected a header 'id,landmarks[,Usage]' and one row per test image")
    p = _solution(tmp_path, b"id,Usage\na01,Public\n")
    assert _error(read_solution_csv, p) == (
        f"{p} lacks column(s) ['landmarks']: found header ['id', 'Usage'], expected 'id,landmarks[,Usage]'")
    p = _solution(tmp_path, b"id,landmarks,Usage\na01,1,Public\na02,1,2,Public\n")
    assert _error(read_solution_csv, p).startswith(
        f"{p}, line 3: expected 3 fields (id,landmarks,Usage) as in the header, found 4")
    p = _solution(tmp_path, b"id,landmarks\na01,1\x00\n")
    assert _error(read_solution_csv, p).startswith(f"{p} is not a UTF-8 CSV text file")
    p = _solution(tmp_path, b"id,landmarks\na01,1\na02,\na01,2\n")
    assert _error(read_solution_csv, p) == (
        f"{p}, line 4: duplicate id 'a01' (first on line 2); every test image must be listed once")
    for value in ("1 x", '"1,2"', "1.0", "one"):
        p = _solution(tmp_path, f"id,landmarks\na01,3\na02,{value}\n".encode())
        shown = value.strip('"')
        assert _error(read_solution_csv, p) == (
            f"{p}, line 3: landmarks {shown!r} of id 'a02' must be space-separated integers "
            "(or empty for a non-landmark image)")
    with pytest.raises(FileNotFoundError, match="No file at .*nope.csv: expected a CSV file with header"):
        read_solution_csv(tmp_path / "nope.csv")


def test_solution_usage_optional_and_extra_columns(tmp_path):
    s = read_solution_csv(_solution(tmp_path, b"id,landmarks\na01,1 2\na02,\n"))
    assert s.landmarks == {"a01": [1, 2], "a02": []} and s.usage == {}
    s = read_solution_csv(_solution(tmp_path, b"note,id,landmarks,Usage\nx,a01, 7 ,\ny,a02,,Ignored\n"))
    assert s.landmarks == {"a01": [7], "a02": []} and s.usage == {"a01": "Public", "a02": "Ignored"}
    ids = ["a,b", 'c"d', "e\nf"]
    p = tmp_path / "round.csv"
    with open(p, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "landmarks", "Usage"])
        w.writerows([(i, str(n), "Private") for n, i in enumerate(ids)])
    assert read_solution_csv(p).landmarks == {i: [n] for n, i in enumerate(ids)}


# ---------------------------------------------------------------------------------------------
# a broken solution.csv never stops the run, only the score
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"id,landmarks\na01,x\n", b"\x00\x01\x02", b"id\nabc\n"])
def test_broken_solution_only_disables_scoring(tmp_path, warnings_log, content):
    root = _dataset(tmp_path / "data", solution=content)
    ds = load_dataset(root)  # does not raise
    assert ds.solution is None and ds.solution_error
    assert str(root / "solution.csv") in ds.solution_error
    assert ds.test_ids == ["fff0000000000001"] and ds.train_ids == ["train0000000001", "train0000000002"]
    errors = _messages(warnings_log, logging.ERROR)
    assert errors == [f"Cannot read {root / 'solution.csv'}, the run will not be scored: {ds.solution_error}"]
    with pytest.raises(ValueError) as info:
        evaluate_run(None, ds, tmp_path / "work")  # the score fails, with the reason
    assert str(info.value) == f"Cannot score the run in {tmp_path / 'work'}: {ds.solution_error}"
    with pytest.raises(ValueError, match="Cannot score the run"):
        evaluate_run(None, root, tmp_path / "work")  # the same from a path


def test_unreadable_solution_paths_only_disable_scoring(tmp_path):
    root = _dataset(tmp_path / "data")
    (root / "solution.csv").mkdir()  # a folder where the file should be
    ds = load_dataset(root)
    assert ds.solution is None and ds.solution_error.startswith(f"No file at {root / 'solution.csv'}")
    (root / "solution.csv").rmdir()
    os.symlink(tmp_path / "gone.csv", root / "solution.csv")  # dangling link
    assert load_dataset(root).solution_error.startswith(f"No file at {root / 'solution.csv'}")


def test_valid_and_absent_solution_have_no_error(tmp_path):
    root = _dataset(tmp_path / "data")
    ds = load_dataset(root)
    assert ds.solution is None and ds.solution_error is None
    with pytest.raises(FileNotFoundError, match="No solution.csv"):
        evaluate_run(None, ds, tmp_path / "work")
    (root / "solution.csv").write_text("id,landmarks,Usage\nfff0000000000001,5,Public\n")
    ds = load_dataset(root)
    assert ds.solution == Solution({"fff0000000000001": [5]}, {"fff0000000000001": "Public"})
    assert ds.solution_error is None


def test_broken_train_csv_still_raises_from_load_dataset(tmp_path):
    root = _dataset(tmp_path / "data")
    (root / "train.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"train.csv is empty: expected a header 'id,landmark_id'"):
        load_dataset(root)


# ---------------------------------------------------------------------------------------------
# off Kaggle: a mistyped DATA never becomes the demo dataset
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def demo_builds(monkeypatch):
    built = []

    def fake_build(root, spec=None):
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / "demo.json").write_text("{}")
        built.append(Path(root))
        return Path(root)

    monkeypatch.setattr(kaggle, "build_demo_dataset", fake_build)
    return built


def test_mistyped_data_raises_and_builds_nothing(tmp_path, demo_builds):
    typo = tmp_path / "dtaa"
    with pytest.raises(FileNotFoundError) as info:
        kaggle.resolve_paths(typo, tmp_path / "w", "", tmp_path / "s.csv", kaggle_input=tmp_path,
                             demo_dir=tmp_path / "demo")
    assert str(info.value) == (
        f"Dataset folder {typo} does not exist (absolute: {typo}): fix DATA in the config cell (or LR_DATA), "
        "or set it to '' to use the embedded demo dataset")
    assert demo_builds == [] and not typo.exists() and not (tmp_path / "demo").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"Dataset folder .*file is not a folder"):
        kaggle.resolve_data(tmp_path / "file", tmp_path / "demo")
    assert demo_builds == []


def test_demo_only_without_data(tmp_path, demo_builds):
    for data in (None, ""):
        paths = kaggle.resolve_paths(data, tmp_path / "w", "", tmp_path / "s.csv", kaggle_input=tmp_path,
                                     demo_dir=tmp_path / "demo")
        assert paths.data == tmp_path / "demo"
    assert demo_builds == [tmp_path / "demo"] * 2
    real = tmp_path / "mine"
    real.mkdir()
    assert kaggle.resolve_data(real, tmp_path / "demo") == real and len(demo_builds) == 2
    with pytest.raises(ValueError, match="set DATA in the config cell"):
        kaggle.resolve_data("", tmp_path / "demo", build_demo=False)


def test_demo_is_never_built_over_another_folder(tmp_path, demo_builds):
    mine = tmp_path / "mine"
    (mine / "train.csv").parent.mkdir()
    (mine / "train.csv").write_text("id,landmark_id\n")
    with pytest.raises(FileExistsError) as info:
        kaggle.resolve_data("", demo_dir=mine)
    assert str(info.value).startswith(f"{mine} exists and is not the demo dataset (no demo.json)")
    assert demo_builds == [] and (mine / "train.csv").read_text() == "id,landmark_id\n"


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_glr2020_submission.ipynb", "03_visualise_matches.ipynb"])
def test_notebooks_use_the_demo_only_without_data(name):
    nb = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert 'DATA = os.environ.get("LR_DATA", "")' in code[0]
    assert 'DEMO_DATA = os.environ.get("LR_DEMO_DATA", "../data/demo")' in code[0]
    rest = "\n".join(code[1:])
    assert "build_demo_dataset" not in rest  # only through resolve_data / resolve_paths
    assert ("resolve_data(DATA, DEMO_DATA)" in rest
            or "resolve_paths(DATA, WORK, MODEL, OUT, demo_dir=DEMO_DATA)" in rest)
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
