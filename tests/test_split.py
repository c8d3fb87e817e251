"""The local validation split: never leaks, deterministic, a dataset the pipeline reads."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from landmark_retrieval.split import ValidationSplit, make_validation_split, select_validation, write_validation


def synthetic(n_landmarks: int = 20, seed: int = 1):
    """ids and labels: landmark L has 1 + (L % 6) images (singletons included)."""
    ids, labels = [], []
    for lm in range(n_landmarks):
        for j in range(1 + lm % 6):
            ids.append(f"img{lm:03d}{j}")
            labels.append(100 + lm)
    order = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in order], [labels[i] for i in order]


def check_no_leak(split: ValidationSplit, ids, labels) -> None:
    train_ids = {i for i, _ in split.train}
    train_landmarks = {lm for _, lm in split.train}
    held_out = {i for i, _ in split.test} | set(split.distractors) | set(split.left_out)
    assert not train_ids & held_out  # no validation image in the new train.csv
    assert not train_landmarks & set(split.held_out_landmarks)  # no held-out landmark in train
    assert {lm for _, lm in split.test} <= train_landmarks  # every test landmark keeps a train image
    assert train_ids | held_out == set(ids) and len(train_ids) + len(held_out) == len(ids)
    label = dict(zip(ids, labels))
    assert all(label[i] in split.held_out_landmarks for i in split.distractors + split.left_out)
    assert all(label[i] == lm for i, lm in split.train + split.test)


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
@pytest.mark.parametrize("fraction,distractors,per", [(0.1, 0.1, 0), (0.3, 0.3, 1), (0.9, 0.5, 2), (0.0, 0.0, 0)])
def test_split_never_leaks(seed, fraction, distractors, per):
    ids, labels = synthetic()
    split = select_validation(ids, labels, fraction, distractors, seed, distractors_per_landmark=per)
    check_no_leak(split, ids, labels)
    assert len(split.held_out_landmarks) == round(distractors * 20)
    kept_images = sum(1 for lb in labels if lb not in split.held_out_landmarks)
    kept_landmarks = 20 - len(split.held_out_landmarks)
    assert len(split.test) == min(round(fraction * kept_images), kept_images - kept_landmarks)
    if per:
        assert len(split.distractors) <= per * len(split.held_out_landmarks)


def test_split_hand_case():
    # landmark 1: one image (never a test image); landmark 2: three; fraction 0.5 of 4 images -> 2
    split = select_validation(["a1", "b1", "b2", "b3"], [1, 2, 2, 2], fraction=0.5, distractor_landmarks=0.0)
    assert split.held_out_landmarks == [] and split.distractors == []
    assert ("a1", 1) in split.train and len(split.test) == 2 and len(split.train) == 2
    assert {lm for _, lm in split.test} == {2}
    # half of two landmarks held out: all images of one landmark are distractors, the other stays
    split = select_validation(["a1", "b1", "b2", "b3"], [1, 2, 2, 2], fraction=0.0, distractor_landmarks=0.5)
    assert len(split.held_out_landmarks) == 1 and split.test == []
    assert split.summary()["distractor_images"] == (1 if split.held_out_landmarks == [1] else 3)
    # at most all but one landmark is held out
    assert len(select_validation(["a1", "b1"], [1, 2], 0.0, 0.99).held_out_landmarks) == 1


def test_split_is_deterministic_and_independent_of_row_order():
    ids, labels = synthetic(seed=1)
    a = select_validation(ids, labels, 0.2, 0.2, seed=3)
    assert select_validation(ids, labels, 0.2, 0.2, seed=3) == a
    ids2, labels2 = synthetic(seed=2)  # the same rows in another order
    b = select_validation(ids2, labels2, 0.2, 0.2, seed=3)
    assert sorted(b.test) == sorted(a.test) and sorted(b.distractors) == sorted(a.distractors)
    c = select_validation(ids, labels, 0.2, 0.2, seed=4)
    assert sorted(c.test) != sorted(a.test) or c.held_out_landmarks != a.held_out_landmarks
    # the distractor cap does not move the other choices
    d = select_validation(ids, labels, 0.2, 0.2, seed=3, distractors_per_landmark=1)
    assert d.test == a.test and d.train == a.train and set(d.distractors) <= set(a.distractors)


def test_split_rejects_bad_arguments():
    with pytest.raises(ValueError, match="fraction"):
        select_validation(["a"], [1], fraction=1.0)
    with pytest.raises(ValueError, match="distractor_landmarks"):
        select_validation(["a"], [1], distractor_landmarks=-0.1)
    with pytest.raises(ValueError, match="repeated"):
        select_validation(["a", "a"], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        select_validation(["a", "b"], [1])
    with pytest.raises(ValueError, match="distractors_per_landmark"):
        select_validation(["a"], [1], distractors_per_landmark=-1)


def test_write_validation_layout_and_refusal(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    paths = {}
    for i in ("aaa1", "bbb1", "bbb2", "ccc1"):
        paths[i] = src / f"{i}.png"
        paths[i].write_bytes(i.encode())
    split = ValidationSplit([("aaa1", 1), ("bbb1", 2)], [("bbb2", 2)], ["ccc1"], [3])
    out = write_validation(split, paths, tmp_path / "val", info={"seed": 0})
    assert (out / "train" / "a" / "a" / "a" / "aaa1.png").resolve() == paths["aaa1"].resolve()
    assert (out / "test" / "b" / "b" / "b" / "bbb2.png").is_symlink()
    assert (out / "test" / "c" / "c" / "c" / "ccc1.png").read_bytes() == b"ccc1"
    assert (out / "train.csv").read_text() == "id,landmark_id\naaa1,1\nbbb1,2\n"
    assert (out / "solution.csv").read_text() == "id,landmarks,Usage\nbbb2,2,Public\nccc1,,Private\n"
    assert json.loads((out / "split.json").read_text())["held_out_landmark_ids"] == [3]
    write_validation(split, paths, out, copy=True)  # an earlier split is replaced
    assert not (out / "test" / "c" / "c" / "c" / "ccc1.png").is_symlink()
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a validation split"):
        write_validation(split, paths, other)
    assert (other / "keep.txt").is_file()


def test_split_command_makes_a_dataset_the_pipeline_reads(small_dataset, tmp_path, capsys):
    from landmark_retrieval.cli import main
    from landmark_retrieval.io.dataset import load_dataset

    out = tmp_path / "val"
    assert main(["split", "--data", str(small_dataset), "--out", str(out), "--fraction", "0.3",
                 "--distractor-landmarks", "0.25", "--seed", "5", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    val = load_dataset(out)
    source = load_dataset(small_dataset)
    assert counts["train_images"] == len(val.train) and counts["test_images"] + counts["distractor_images"] == len(
        val.test_ids)
    assert not set(val.train_ids) & set(val.test_ids)
    assert set(val.train_ids) | set(val.test_ids) == set(source.train_ids)
    assert sorted(val.solution.landmarks) == sorted(val.test_ids)
    held = set(json.loads((out / "split.json").read_text())["held_out_landmark_ids"])
    assert not held & set(val.train["landmark_id"])
    with open(out / "solution.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    labels = source.labels()
    for row in rows:  # a test image keeps its landmark; a distractor is an image of a held-out landmark
        assert (row["landmarks"] == "") == (labels[row["id"]] in held)
        assert row["landmarks"] in ("", str(labels[row["id"]]))
    again = make_validation_split(small_dataset, out, 0.3, 0.25, seed=5)  # deterministic: same files
    assert sorted(i for i, _ in again.test) == sorted(r["id"] for r in rows if r["landmarks"])
