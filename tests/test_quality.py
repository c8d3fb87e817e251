"""Recognition confidence and non-landmark handling (predict.confidence, min_inliers,
test_similarity, nonlandmark_dir): hand-computed cases, and kaggle-baseline unchanged."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from landmark_retrieval.extract import extract
from landmark_retrieval.io.candidates import Candidates
from landmark_retrieval.io.dataset import Dataset
from landmark_retrieval.io.layout import feature_dir, nonlandmark_feature_dir, read_predictions
from landmark_retrieval.io.writer import ShardWriter
from landmark_retrieval.predict import predict
from landmark_retrieval.presets import get_config
from landmark_retrieval.search.rerank import (
    best_candidate,
    inlier_confidence,
    nonlandmark_flags,
    predict_one,
    recognize,
)

F = np.float32  # retrieval scores are float32: the hand computations use the same values

TRAIN = {"t0": 1, "t1": 2, "t2": 2, "t3": 1}
#: test id -> (neighbours, cosine, inliers), retrieval order
CASES = {
    "q1": (["t0", "t1", "t2", "t3"], [0.9, 0.8, 0.7, 0.6], [0, 50, 100, 0]),  # label 2, verified
    "q2": (["t3", "t0", "t1", "t2"], [0.75, 0.7, 0.3, 0.2], [4, 0, 0, 0]),  # a distractor: 4 inliers
    "q3": (["t1", "t0", "t2", "t3"], [0.35, 0.3, 0.25, 0.1], [30, 0, 30, 0]),  # label 2, weak but verified
    "q4": (["t0", "t3", "t1", "t2"], [0.5, 0.45, 0.2, 0.1], [0, 0, 0, 0]),  # a distractor like q2
}
#: unit test descriptors. Largest cosine to another test image / to train: q1 0.6 (q4) / 0.9,
#: q2 0.8 (q4) / 0.75, q3 0 / 0.35, q4 0.8 (q2) / 0.5: q2 and q4 are more like test images
TEST_GLOBALS = {"q1": [1.0, 0.0, 0.0], "q2": [0.0, 1.0, 0.0], "q3": [0.0, 0.0, 1.0], "q4": [0.6, 0.8, 0.0]}


def make_run(root: Path) -> Dataset:
    """A work directory with hand-made retrieval.h5, verification.csv and test descriptors."""
    work = root / "work"
    work.mkdir(parents=True)
    db_ids = list(TRAIN)
    with h5py.File(work / "retrieval.h5", "w") as f:
        string = h5py.string_dtype()
        f.create_dataset("query_ids", data=np.array(list(CASES), dtype=object), dtype=string)
        f.create_dataset("db_ids", data=np.array(db_ids, dtype=object), dtype=string)
        f.create_dataset("indices", data=np.array([[db_ids.index(i) for i in c[0]] for c in CASES.values()], np.int64))
        f.create_dataset("scores", data=np.array([c[1] for c in CASES.values()], np.float32))
        f.attrs["db_split"] = "train"
    with open(work / "verification.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["query_id", "rank", "db_id", "num_matches", "inliers"])
        for q, (ids, _, inliers) in CASES.items():
            w.writerows((q, r, i, inl + 10, inl) for r, (i, inl) in enumerate(zip(ids, inliers)))
    with ShardWriter(feature_dir(work, "test")) as writer:
        for q, g in TEST_GLOBALS.items():
            writer.add_global(q, np.array(g, np.float32))
    train = pd.DataFrame({"id": pd.Series(db_ids, dtype=object), "landmark_id": np.array(list(TRAIN.values()))})
    return Dataset(root=root, train=train, test_ids=list(CASES))


def candidates(q: str) -> Candidates:
    ids, cos, inl = CASES[q]
    return Candidates(ids, np.array([TRAIN[i] for i in ids]), np.array(cos, np.float32), np.array(inl),
                      np.array(inl) + 10)


def run_predict(data: Dataset, preset: str, overrides=None):
    work = data.root / "work"
    predict(get_config(preset, overrides), data, work)
    return read_predictions(work), read_predictions(work, verified=False)


# ---------------------------------------------------------------------------------------------
# kaggle-baseline: exact values, unchanged by the new options' defaults
# ---------------------------------------------------------------------------------------------
def test_kaggle_baseline_predictions_exact_hand_case(tmp_path):
    verified, global_only = run_predict(make_run(tmp_path), "kaggle-baseline")
    # q1 totals: t2 1 + 0.7, t1 50/70 + 0.8, t0 0.9, t3 0.6 -> label 2 sums the first two
    assert verified["q1"] == (2, (1.0 + float(F(0.7))) + (50 / 70 + float(F(0.8))))
    # q2 totals: t3 4/70 + 0.75, t0 0.7, t1 0.3, t2 0.2 -> label 1
    assert verified["q2"] == (1, (4 / 70 + float(F(0.75))) + float(F(0.7)))
    # q3 totals: t1 30/70 + 0.35, t2 30/70 + 0.25, t0 0.3, t3 0.1 -> label 2
    assert verified["q3"] == (2, (30 / 70 + float(F(0.35))) + (30 / 70 + float(F(0.25))))
    assert verified["q4"] == (1, float(F(0.5)) + float(F(0.45)))
    # the baseline ranks the distractor q2 (1.507) above the correct q3 (1.457)
    assert verified["q2"][1] > verified["q3"][1]
    # global only: label 1 (0.9 + 0.6) ties label 2 (0.8 + 0.7): the label met first wins
    assert global_only["q1"] == (1, float(F(0.9)) + float(F(0.6)))
    assert global_only["q3"] == (2, float(F(0.35)) + float(F(0.25)))  # 0.6 vs label 1: 0.3 + 0.1


def test_defaults_are_the_baseline(tmp_path):
    data = make_run(tmp_path)
    baseline = run_predict(data, "kaggle-baseline")
    explicit = run_predict(data, "kaggle-baseline", {"predict": {
        "confidence": "sum", "min_inliers": 0, "test_similarity": False, "nonlandmark_dir": None}})
    assert explicit == baseline
    conf = get_config("kaggle-baseline")
    for q in CASES:
        assert recognize(candidates(q), conf)[0] == predict_one(candidates(q), conf, verified=True)[0]


# ---------------------------------------------------------------------------------------------
# (4) inlier confidence
# ---------------------------------------------------------------------------------------------
def test_best_candidate_most_inliers_then_cosine_then_first():
    labels = np.array([1, 2, 2, 2, 2])
    assert best_candidate(labels, np.array([90, 30, 40, 40, 40]), np.array([0.9, 0.8, 0.5, 0.7, 0.7]), 2) == 3
    assert best_candidate(labels, np.array([90, 30, 40, 40, 40]), np.array([0.9, 0.8, 0.5, 0.7, 0.7]), 1) == 0
    with pytest.raises(ValueError, match="Label 3"):
        best_candidate(labels, np.zeros(5), np.zeros(5), 3)


def test_inlier_confidence_hand_case():
    assert inlier_confidence(20, 0.5, 20.0, 0.01) == 0.5 + 0.005
    assert inlier_confidence(0, 0.9, 20.0, 0.01) == 0.01 * 0.9
    conf = get_config("kaggle-baseline", {"predict": {"confidence": "inliers"}})
    # q1: label 2 wins; its best candidate is t2 (100 inliers, cosine 0.7)
    pred, inl = recognize(candidates("q1"), conf)
    assert inl == 100 and pred == (2, 100 / 120 + 0.01 * float(F(0.7)))
    # q3: t1 and t2 both have 30 inliers: the higher cosine (t1, 0.35) is the best candidate
    pred, inl = recognize(candidates("q3"), conf)
    assert inl == 30 and pred == (2, 30 / 50 + 0.01 * float(F(0.35)))
    # q4: no inliers at all: t0 (cosine 0.5) is label 1's best candidate
    assert recognize(candidates("q4"), conf) == ((1, 0.01 * float(F(0.5))), 0)
    # comparable across test images: q1 (100 inliers) > q3 (30) > q2 (4), whatever the label sums
    q2 = recognize(candidates("q2"), conf)[0]
    assert q2 == (1, 4 / 24 + 0.01 * float(F(0.75)))
    assert recognize(candidates("q1"), conf)[0][1] > recognize(candidates("q3"), conf)[0][1] > q2[1]


def test_inlier_confidence_in_predictions_csv(tmp_path):
    verified, global_only = run_predict(make_run(tmp_path), "kaggle-baseline", {"predict": {"confidence": "inliers"}})
    assert verified["q1"] == (2, 100 / 120 + 0.01 * float(F(0.7)))
    assert global_only["q1"] == (1, float(F(0.9)) + float(F(0.6)))  # the global-only columns stay the vote


# ---------------------------------------------------------------------------------------------
# (3) non-landmark handling
# ---------------------------------------------------------------------------------------------
def test_min_inliers_lowers_the_unverified_distractor(tmp_path):
    data = make_run(tmp_path)
    base, _ = run_predict(data, "kaggle-baseline")
    verified, _ = run_predict(data, "kaggle-baseline", {"predict": {"min_inliers": 10, "unverified_factor": 0.1}})
    assert verified["q2"] == (1, base["q2"][1] * 0.1)  # best label-1 candidate: 4 inliers < 10
    assert verified["q4"] == (1, base["q4"][1] * 0.1)  # 0 inliers
    assert verified["q1"] == base["q1"] and verified["q3"] == base["q3"]  # 100 and 30 inliers
    # GAP order: the distractor q2 now ranks after the correct q3
    assert verified["q2"][1] < verified["q3"][1] < base["q2"][1]


def test_nonlandmark_flags_hand_case():
    reference = np.array([[0.6, 0.0], [0.8, 0.0], [0.8, 0.6]])
    train = np.array([0.9, 0.5, 0.85])
    assert nonlandmark_flags(reference, train, 1, 0.0).tolist() == [False, True, False]
    assert nonlandmark_flags(reference, train, 1, 0.3).tolist() == [False, False, False]  # 0.8 > 0.5 + 0.3 fails
    assert nonlandmark_flags(reference, train, 1, -0.1).tolist() == [False, True, True]  # 0.8 > 0.75
    # k = 2: means 0.3, 0.4, 0.7 against 0.8, 0.4, 0.75 (strictly more similar)
    assert nonlandmark_flags(reference, train, 2, -0.1).tolist() == [False, False, False]
    assert nonlandmark_flags(np.zeros((3, 0)), train, 1, 0.0).tolist() == [False, False, False]
    with pytest.raises(ValueError, match="reference"):
        nonlandmark_flags(np.zeros(3), train, 1, 0.0)


def test_test_similarity_lowers_the_distractor(tmp_path):
    data = make_run(tmp_path)
    base, base_global = run_predict(data, "kaggle-baseline")
    verified, global_only = run_predict(data, "kaggle-baseline",
                                        {"predict": {"test_similarity": True, "nonlandmark_factor": 0.25}})
    # q2: nearest other test image q4 at 0.8 > its best train cosine 0.75: flagged; q4 likewise
    assert verified["q2"] == (1, base["q2"][1] * 0.25)
    assert verified["q4"] == (1, base["q4"][1] * 0.25)
    # q1: 0.6 (q4) < 0.9; q3: 0 < 0.35: not flagged
    assert verified["q1"] == base["q1"] and verified["q3"] == base["q3"]
    assert verified["q2"][1] < verified["q3"][1]
    assert global_only == base_global


def test_rules_combine_multiplicatively(tmp_path):
    data = make_run(tmp_path)
    verified, _ = run_predict(data, "kaggle-baseline", {"predict": {
        "confidence": "inliers", "min_inliers": 10, "test_similarity": True, "unverified_factor": 0.5,
        "nonlandmark_factor": 0.1}})
    assert verified["q2"] == (1, (4 / 24 + 0.01 * float(F(0.75))) * 0.5 * 0.1)
    assert verified["q1"] == (2, 100 / 120 + 0.01 * float(F(0.7)))


def test_nonlandmark_options_are_checked():
    for option, value, message in (("confidence", "max", "predict.confidence"),
                                   ("unverified_factor", "2", "predict.unverified_factor"),
                                   ("nonlandmark_factor", "-0.1", "predict.nonlandmark_factor"),
                                   ("inlier_offset", "0", "predict.inlier_offset"),
                                   ("min_inliers", "-1", "predict.min_inliers"),
                                   ("nonlandmark_k", "0", "predict.nonlandmark_k")):
        with pytest.raises(ValueError, match=message):
            get_config("demo", [f"predict.{option}={value}"])


def test_nonlandmark_dir_flags_images_like_the_folder(small_dataset, tmp_path):
    """(c) end to end: the non-landmark folder holds the demo's distractor test images (other
    files, same pixels): exactly those test images are flagged; the store is extracted once."""
    from landmark_retrieval.io.dataset import load_dataset
    from landmark_retrieval.pipeline import run

    data = load_dataset(small_dataset)
    work = tmp_path / "work"
    conf = get_config("demo")
    run(conf, data, work, tmp_path / "submission.csv")
    base = read_predictions(work)
    folder = tmp_path / "nonlandmark" / "sub"
    folder.mkdir(parents=True)
    distractors = sorted(k for k, v in data.solution.landmarks.items() if not v)
    for i in distractors:
        shutil.copyfile(data.path("test", i), folder / f"copy-{i}.jpg")
    (folder / "notes.txt").write_text("not an image")
    nl = get_config("demo", {"predict": {"nonlandmark_dir": str(tmp_path / "nonlandmark"), "nonlandmark_factor": 0.5}})
    with pytest.raises(ValueError, match="run `landmark-retrieval extract`"):
        predict(nl, data, work)  # predict only reads: the extract step describes the folder
    extract(nl, data, work)
    predict(nl, data, work)
    out = read_predictions(work)
    flagged = {i for i in out if out[i] != base[i]}
    assert flagged == set(distractors)
    for i in flagged:
        assert out[i] == (base[i][0], pytest.approx(base[i][1] * 0.5, rel=1e-12))
    store = nonlandmark_feature_dir(work)
    shards = sorted(p.name for p in store.glob("*.h5"))
    assert shards and (store / "meta.json").is_file()
    extract(nl, data, work)  # reused, not extracted again
    predict(nl, data, work)
    assert sorted(p.name for p in store.glob("*.h5")) == shards and read_predictions(work) == out
    (folder / f"copy-{distractors[0]}.jpg").unlink()  # another image list: out of date, extracted again
    with pytest.raises(ValueError, match="other features"):
        predict(nl, data, work)
    extract(nl, data, work)
    predict(nl, data, work)
    assert (store / "meta.json").is_file() and read_predictions(work) != base


def test_presets_keep_the_rules_off_except_classical_best():
    from landmark_retrieval.presets import PRESETS, config_diff

    for name in PRESETS:
        p = get_config(name).predict
        assert (p.min_inliers, p.test_similarity, p.nonlandmark_dir) == (0, False, None)
        if name not in ("classical-best", "learned-fast", "learned-best", "retrieval-best"):  # they start from it
            assert p.confidence == "sum"
    best = get_config("classical-best")
    changes = {k: (a, b) for k, a, b in config_diff(get_config("demo"), best) if k != "name"}
    assert changes == {"verify.num_to_rerank": (10, 30), "verify.mutual": (False, True),
                       "predict.confidence": ("sum", "inliers"), "predict.inlier_global_weight": (0.01, 0.3)}
