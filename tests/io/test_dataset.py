import pytest

from landmark_retrieval.io.dataset import image_path, load_dataset
from landmark_retrieval.io.tables import read_solution_csv, read_train_csv


def test_image_path_layout(tmp_path):
    assert image_path(tmp_path, "train", "abcdef0123456789") == tmp_path / "train/a/b/c/abcdef0123456789.jpg"


def test_load_dataset(tmp_path):
    (tmp_path / "train.csv").write_text("id,landmark_id\nabc1,5\nabd2,6\n")
    p = image_path(tmp_path, "test", "fff0")
    p.parent.mkdir(parents=True)
    p.write_bytes(b"")
    (tmp_path / "solution.csv").write_text("id,landmarks,Usage\nfff0,5 6,Public\n")
    ds = load_dataset(tmp_path)
    assert ds.train_ids == ["abc1", "abd2"] and ds.labels() == {"abc1": 5, "abd2": 6}
    assert ds.test_ids == ["fff0"] and ds.path("test", "fff0") == p
    assert ds.solution.landmarks == {"fff0": [5, 6]}


def test_train_csv_errors_name_the_line(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("id,landmark_id\nabc1,5\nabc2,five\n")
    with pytest.raises(ValueError, match=r"line 3.*five"):
        read_train_csv(f)
    f.write_text("id,label\nabc1,5\n")
    with pytest.raises(ValueError, match="landmark_id"):
        read_train_csv(f)
    f.write_text("id,landmark_id\nabc1,5\nabc1,6\n")
    with pytest.raises(ValueError, match="line 3: duplicate"):
        read_train_csv(f)
    with pytest.raises(FileNotFoundError, match="train.csv"):
        read_train_csv(tmp_path / "none.csv")


def test_solution_with_empty_landmarks(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("id,landmarks,Usage\na,,Private\nb,7,Ignored\n")
    s = read_solution_csv(f)
    assert s.landmarks == {"a": [], "b": [7]} and s.subset(None) == {"a": []}
    f.write_text("id,landmarks\na,x\n")
    with pytest.raises(ValueError, match="line 2"):
        read_solution_csv(f)


def test_missing_test_folder(tmp_path):
    (tmp_path / "train.csv").write_text("id,landmark_id\nabc1,5\n")
    with pytest.raises(FileNotFoundError, match="test/"):
        load_dataset(tmp_path)
