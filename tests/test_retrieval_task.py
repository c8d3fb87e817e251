"""The retrieval task (GLR2021): index/ layout, id,images submissions scored with mAP@100, and
label-aware re-ranking from train neighbours."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from landmark_retrieval import cli
from landmark_retrieval.evaluate import score_rankings, score_submission
from landmark_retrieval.io.candidates import Candidates
from landmark_retrieval.io.dataset import load_dataset
from landmark_retrieval.io.layout import load_retrieval
from landmark_retrieval.io.submission import read_retrieval_submission, write_retrieval_submission
from landmark_retrieval.io.tables import RetrievalSolution, read_retrieval_solution_csv
from landmark_retrieval.presets import get_config
from landmark_retrieval.retrieve import infer_labels
from landmark_retrieval.search.rerank import rank_index


@pytest.fixture(scope="module")
def retrieval_data(tmp_path_factory) -> Path:
    from landmark_retrieval.demo import DemoSpec, build_demo_dataset

    spec = DemoSpec(train_views=2, test_views=1, distractor_views=1, seed=3, task="retrieval")
    return build_demo_dataset(tmp_path_factory.mktemp("retrieval") / "data", spec)


@pytest.fixture(scope="module")
def retrieval_run(retrieval_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    work, out = root / "work", root / "submission.csv"
    args = ["-q", "run", "--data", str(retrieval_data), "--work", str(work), "--out", str(out), "--preset", "demo",
            "--set", "verify.num_workers=1", "--set", "retrieve.label_aware=true"]
    assert cli.main(args) == 0
    return work, out


def test_layout_is_detected_and_can_be_forced(retrieval_data, tmp_path):
    ds = load_dataset(retrieval_data)
    assert ds.task == "retrieval" and ds.db_split == "index" and ds.index_ids and ds.has_train
    assert isinstance(ds.solution, RetrievalSolution)
    assert set(i for ids in ds.solution.images.values() for i in ids) <= set(ds.index_ids)
    # train.csv is optional for the retrieval task, required for recognition
    bare = tmp_path / "bare"
    shutil.copytree(retrieval_data / "index", bare / "index")
    shutil.copytree(retrieval_data / "test", bare / "test")
    ds = load_dataset(bare)
    assert ds.task == "retrieval" and not ds.has_train and ds.solution is None
    with pytest.raises(FileNotFoundError, match="train.csv"):
        load_dataset(bare, task="recognition")
    shutil.rmtree(bare / "index")
    with pytest.raises(FileNotFoundError, match="No index/ folder"):
        load_dataset(bare, task="retrieval")


def test_submission_is_valid_for_kaggle(retrieval_data, retrieval_run):
    work, out = retrieval_run
    ds = load_dataset(retrieval_data)
    sub = read_retrieval_submission(out, index_ids=set(ds.index_ids))  # only index ids, <= 100 each
    assert list(sub) == ds.test_ids  # one row per test id, in order
    assert all(len(v) <= 100 and len(set(v)) == len(v) for v in sub.values())
    with open(work / "failures.csv", newline="") as fh:
        failed = {row["id"] for row in csv.DictReader(fh)}
    assert {q for q, v in sub.items() if not v} == failed & set(ds.test_ids)  # empty only for failed images
    assert load_retrieval(work).db_split == "index"
    assert (work / "features" / "index").is_dir() and (work / "features" / "train").is_dir()


def test_scores_of_the_file_and_of_the_run_agree(retrieval_data, retrieval_run):
    work, out = retrieval_run
    metrics = json.loads((work / "metrics.json").read_text())
    assert {"global_map100", "verified_map100", "label_map100", "num_relevant_test"} <= set(metrics)
    from_file = score_submission(out, retrieval_data / "solution.csv")
    assert from_file["map100"] == pytest.approx(metrics["label_map100"])
    assert metrics["verified_map100"] >= metrics["global_map100"] - 1e-9
    assert metrics["verified_map100"] > 0.9


def test_map100_hand_case_in_the_submission_format(tmp_path):
    sol = tmp_path / "solution.csv"
    with open(sol, "w", newline="") as fh:
        csv.writer(fh).writerows([("id", "images", "Usage"), ("q1", "a b", "Public"), ("q2", "c", "Private"),
                                  ("q3", "", "Public")])
    # q1: hits at ranks 1 and 3 -> (1/1 + 2/3) / 2; q2: hit at rank 2 -> (1/2) / 1; q3: not averaged
    path = write_retrieval_submission({"q1": ["a", "x", "b"], "q2": ["y", "c"], "q3": ["a"]}, ["q1", "q2", "q3"],
                                      tmp_path / "sub.csv")
    m = score_submission(path, sol)
    assert m["map100"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    assert m["map100_public"] == pytest.approx((1 + 2 / 3) / 2) and m["map100_private"] == pytest.approx(0.5)
    assert m["num_test"] == 3 and m["num_relevant_test"] == 2
    assert score_rankings({}, read_retrieval_solution_csv(sol))["map100"] == 0.0


def test_submission_checks(tmp_path):
    path = write_retrieval_submission({"q": [f"i{k}" for k in range(150)]}, ["q", "r"], tmp_path / "s.csv")
    sub = read_retrieval_submission(path)
    assert len(sub["q"]) == 100 and sub["r"] == []  # capped at 100; a row for every test id
    bad = tmp_path / "bad.csv"
    bad.write_text("id,images\nq," + " ".join(f"i{k}" for k in range(101)) + "\n")
    with pytest.raises(ValueError, match="line 2: 101 images; at most 100"):
        read_retrieval_submission(bad)
    with pytest.raises(ValueError, match="'i3' is not an index image"):
        read_retrieval_submission(path, index_ids={"i0", "i1", "i2"})


def test_infer_labels_hand_case():
    scores = np.array([[0.9, 0.8, 0.7], [0.5, 0.4, 0.3]], np.float32)
    indices = np.array([[0, 1, 2], [2, 1, 0]])
    labels, sums = infer_labels(scores, indices, np.array([7, 8, 8]))
    # row 0: label 7 -> 0.9, label 8 -> 1.5; row 1: label 8 -> 0.9, label 7 -> 0.3
    assert labels.tolist() == [8, 8]
    np.testing.assert_allclose(sums, [1.5, 0.9], rtol=1e-6)
    labels, _ = infer_labels(np.array([[0.5, 0.5]], np.float32), np.array([[0, 1]]), np.array([3, 4]))
    assert labels.tolist() == [3]  # a tie: the label met first
    assert infer_labels(np.zeros((0, 2), np.float32), np.zeros((0, 2), np.int64), np.array([1]))[0].shape == (0,)


def test_label_aware_ranking_hand_case():
    conf = get_config("default", {"verify": {"num_to_rerank": 2}, "predict": {"label_weight": 0.1}})
    c = Candidates(["a", "b", "c", "d"], np.array([1, 2, 2, 1]), np.array([0.9, 0.85, 0.82, 0.5], np.float32),
                   np.array([0, 35, 0, 0]), np.array([0, 40, 0, 0]), query_label=2)
    # verified: b (0.5 + 0.85) before a (0.9), then c, d in retrieval order
    assert rank_index(c, conf, verified=True) == ["b", "a", "c", "d"]
    # label-aware: b 1.45, a 0.9, c 0.82 + 0.1 = 0.92 overtakes a; d stays last
    assert rank_index(c, conf, verified=True, label_aware=True) == ["b", "c", "a", "d"]
    assert rank_index(c, conf, verified=False, label_aware=True) == ["b", "c", "a", "d"]
    c.query_label = -1  # unknown landmark: no change
    assert rank_index(c, conf, verified=True, label_aware=True) == ["b", "a", "c", "d"]


def test_demo_retrieval_from_the_cli(tmp_path, capsys):
    args = ["demo", "--task", "retrieval", "--data", str(tmp_path / "d"), "--work", str(tmp_path / "w"),
            "--out", str(tmp_path / "s.csv"), "--set", "verify.num_workers=1", "--json", "-q"]
    assert cli.main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"]["verified_map100"] > 0.9
    assert (tmp_path / "s.csv").read_text().startswith("id,images\n")
