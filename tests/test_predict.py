import numpy as np
import pytest

from landmark_retrieval.io.candidates import Candidates
from landmark_retrieval.presets import get_config
from landmark_retrieval.search.rerank import predict_one, rerank, total_scores, vote


def test_total_score_is_the_host_baseline_formula():
    t = total_scores(np.array([0.9, 0.8, 0.7]), np.array([0, 50, 100]), 70)
    assert t == pytest.approx([0.9, 50 / 70 + 0.8, 1.0 + 0.7])


def test_vote_sums_per_label_first_seen_wins_ties():
    assert vote([1, 2, 2, 3], [0.9, 0.5, 0.5, 0.1], top_k=5) == (2, 1.0)
    assert vote([1, 2, 2, 3], [0.9, 0.5, 0.5, 0.1], top_k=2) == (1, 0.9)
    assert vote([7, 8], [0.5, 0.5], top_k=5) == (7, 0.5)
    assert vote([], [], top_k=5) is None


def test_baseline_rerank_and_prediction_hand_computed():
    conf = get_config("kaggle-baseline", ["verify.num_to_rerank=3", "predict.top_k=2"])
    c = Candidates(["t0", "t1", "t2", "t3"], np.array([1, 2, 2, 1]), np.array([0.9, 0.8, 0.7, 0.6], np.float32),
                   np.array([0, 50, 100, 0]), np.array([3, 60, 120, 0]))
    order, totals = rerank(c.global_scores[:3], c.inliers[:3], conf.predict)
    assert order.tolist() == [2, 1, 0]
    pred, ranking = predict_one(c, conf, verified=True)
    assert ranking == ["t2", "t1", "t0", "t3"]  # re-ranked head, then the rest in retrieval order
    assert pred[0] == 2 and pred[1] == pytest.approx(1.7 + 50 / 70 + 0.8, rel=1e-6)
    gpred, granking = predict_one(c, conf, verified=False)
    assert gpred == (1, pytest.approx(0.9)) and granking == ["t0", "t1", "t2", "t3"]


def test_rerank_is_stable_for_equal_totals():
    conf = get_config("kaggle-baseline")
    order, _ = rerank(np.array([0.5, 0.5, 0.5]), np.array([0, 0, 0]), conf.predict)
    assert order.tolist() == [0, 1, 2]
