import json

import pytest

from landmark_retrieval.evaluate import score_submission
from landmark_retrieval.io.tables import Solution
from landmark_retrieval.metrics import (
    global_average_precision,
    mean_average_precision,
    recall_at_k,
    relevant_train_images,
    top1_accuracy,
)


def test_gap_hand_computed_with_non_landmark_image():
    solution = {"a": [1], "b": [2], "c": [], "d": [3]}
    preds = {"a": (1, 0.9), "b": (5, 0.8), "c": (1, 0.7), "d": (3, 0.6)}
    # ranks: a correct (1/1), b wrong, c wrong (no landmark), d correct (2/4); M = 3
    assert global_average_precision(preds, solution) == pytest.approx((1 + 2 / 4) / 3)


def test_gap_ties_are_broken_by_test_id_ascending():
    solution = {"x": [9], "y": [2]}
    preds = {"y": (2, 0.5), "x": (1, 0.5)}
    # x (wrong) ranks before y (correct): 1/2, divided by M = 2
    assert global_average_precision(preds, solution) == pytest.approx(0.25)
    preds = {"x": (9, 0.5), "y": (7, 0.5)}
    assert global_average_precision(preds, solution) == pytest.approx(0.5)


def test_gap_missing_and_empty_predictions_and_unknown_ids():
    solution = {"a": [1], "b": [2]}
    assert global_average_precision({"a": (1, 0.1), "b": None, "zzz": (3, 9.0)}, solution) == pytest.approx(0.5)
    assert global_average_precision({}, solution) == 0.0
    assert global_average_precision({"a": (1, 1.0)}, {"a": []}) == 0.0
    assert top1_accuracy({"a": (1, 0.1), "b": (3, 0.9)}, solution) == 0.5


def test_gap_perfect_and_multi_label_solution():
    solution = {"a": [1, 4], "b": [2], "n": []}
    assert global_average_precision({"a": (4, 0.3), "b": (2, 0.2), "n": (7, 0.1)}, solution) == 1.0


def test_map100_hand_computed_duplicates_and_cutoff():
    relevant = {"q1": ["a", "b"], "q2": ["c"], "q3": []}
    preds = {"q1": ["a", "x", "b"], "q2": ["x", "y"]}
    # q1: (1/1 + 2/3) / 2; q2: 0; q3 has no relevant images and is not averaged
    assert mean_average_precision(preds, relevant) == pytest.approx(((1 + 2 / 3) / 2) / 2)
    # a repeated id is skipped but keeps its position
    assert mean_average_precision({"q": ["a", "a", "b"]}, {"q": ["a", "b"]}) == pytest.approx((1 + 2 / 3) / 2)
    # only the first max_predictions count, and the denominator is min(|relevant|, k)
    ranked = ["x"] * 1 + ["a"]
    assert mean_average_precision({"q": ranked}, {"q": ["a"]}, max_predictions=1) == 0.0
    assert mean_average_precision({"q": ["a", "b"]}, {"q": ["a", "b", "c"]}, max_predictions=2) == 1.0


def test_relevant_train_images():
    labels = {"t1": 1, "t2": 2, "t3": 1}
    assert relevant_train_images({"q": [1], "n": []}, labels) == {"q": ["t1", "t3"]}


def test_evaluate_files_with_usage(tmp_path):
    sol = tmp_path / "solution.csv"
    sol.write_text("id,landmarks,Usage\na,1,Public\nb,2,Private\nc,,Public\nd,3,Ignored\n")
    sub = tmp_path / "submission.csv"
    sub.write_text("id,landmarks\na,1 0.9\nb,5 0.8\nc,1 0.95\nd,3 0.99\n")
    out = tmp_path / "m.json"
    m = score_submission(sub, sol, json_out=out)
    # scored (d ignored): c (wrong, 0.95), a (correct, 0.9), b (wrong): (1/2) / 2
    assert m["gap"] == pytest.approx(0.25)
    assert m["gap_public"] == pytest.approx(0.5)  # c wrong then a correct, M = 1
    assert m["gap_private"] == 0.0
    assert json.loads(out.read_text())["gap"] == pytest.approx(0.25)
    assert Solution({"a": [1]}, {"a": "Ignored"}).subset(None) == {}


def test_recall_at_k_hand_computed():
    rankings = {"q1": ["a", "b", "c"], "q2": ["x", "y", "z"], "q3": ["c", "c", "a"], "q4": ["a"]}
    relevant = {"q1": ["c"], "q2": ["z", "w"], "q3": ["a"], "q5": ["a"], "d": []}
    # first relevant at rank 2 (q1), 2 (q2), 2 (q3, after a duplicate), never (q5: not ranked); d is a distractor
    assert recall_at_k(rankings, relevant, (1, 2, 3, 100)) == {1: 0.0, 2: 0.0, 3: 0.75, 100: 0.75}
    assert recall_at_k({"q": ["a", "b"]}, {"q": ["a"]}, (1,)) == {1: 1.0}
    assert recall_at_k({}, {"d": []}, (1, 10)) == {1: 0.0, 10: 0.0}


def test_recall_at_k_rejects_bad_arguments():
    with pytest.raises(TypeError, match="rankings"):
        recall_at_k(None, {}, (1,))
    with pytest.raises(TypeError, match=r"relevant\['q'\]"):
        recall_at_k({}, {"q": "abc"}, (1,))
    with pytest.raises(ValueError, match="positive ints"):
        recall_at_k({}, {}, (0,))


def test_a_run_reports_where_it_loses_its_queries(small_dataset, tmp_path):
    """evaluate: recall@k of the global ranking, recall among the re-ranked candidates, and how
    many of those verification put first; consistent with each other and written to metrics.json."""
    from landmark_retrieval.evaluate import evaluate
    from landmark_retrieval.pipeline import run
    from landmark_retrieval.presets import get_config

    conf = get_config("demo", {"retrieve": {"k": 20}})
    work = tmp_path / "work"
    run(conf, small_dataset, work, tmp_path / "submission.csv")
    metrics = json.loads(evaluate(conf, small_dataset, work).read_text())
    assert [k for k in metrics if k.startswith("recall_at_")] == ["recall_at_1", "recall_at_10", "recall_at_rerank"]
    assert 0 < metrics["recall_at_1"] <= metrics["recall_at_rerank"] <= metrics["recall_at_10"] <= 1
    assert metrics["num_relevant_queries"] == metrics["num_landmark_test"]
    assert metrics["verified_confirmed"] == pytest.approx(metrics["verified_recall_at_1"] / metrics["recall_at_rerank"])
    # the verified first image is the verified prediction's top neighbour: top-1 accuracy agrees
    assert metrics["verified_recall_at_1"] >= metrics["recall_at_1"]
