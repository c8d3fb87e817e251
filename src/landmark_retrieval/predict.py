"""Step 4: re-rank verified candidates and vote for one landmark per test image.

For each test image the ``num_to_rerank`` nearest train images get a total score
``min(inliers, max_inlier_score) / max_inlier_score + global_weight * cosine`` and are sorted by
it (stable, so ties keep the retrieval order); the first ``top_k`` vote: each label scores the
sum of its neighbours' totals, the best label wins (ties: the label met first) and its sum is the
confidence. This is the GLR2020 host baseline. The global-only prediction is the same vote over
the ``top_k`` nearest neighbours with cosine scores.

Output ``WORK/predictions.csv``: ``id,landmark_id,score,global_landmark_id,global_score``
(empty fields when a test image has no prediction, e.g. its features could not be extracted).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

from .candidates import Candidates, load_candidates
from .config import Config, PredictConfig
from .dataset import Dataset, load_dataset
from .layout import Prediction, predictions_path, read_predictions, verification_path

logger = logging.getLogger("landmark_retrieval")

__all__ = ["predict", "predict_one", "rerank", "vote", "total_scores", "Candidates", "load_candidates",
           "Prediction", "predictions_path", "read_predictions"]



def total_scores(global_scores: np.ndarray, inliers: np.ndarray, max_inlier_score: int,
                 global_weight: float = 1.0) -> np.ndarray:
    """``min(inliers, cap) / cap + global_weight * cosine`` for (R,) arrays -> (R,) float64."""
    g = np.asarray(global_scores, np.float64)
    local = np.minimum(np.asarray(inliers, np.float64), max_inlier_score) / float(max_inlier_score)
    return local + global_weight * g


def rerank(global_scores: np.ndarray, inliers: np.ndarray, conf: PredictConfig) -> Tuple[np.ndarray, np.ndarray]:
    """Order of candidates by total score, descending and stable.

    Returns:
        ``order`` (R,) int64 and the totals (R,) in that order.
    """
    total = total_scores(global_scores, inliers, conf.max_inlier_score, conf.global_weight)
    order = np.argsort(-total, kind="stable")
    return order, total[order]


def vote(labels: Sequence[int], scores: Sequence[float], top_k: int) -> Prediction:
    """Per-label sum of the first ``top_k`` scores; the largest wins (ties: first seen).

    Returns:
        ``(label, summed score)`` or None when there are no candidates.
    """
    sums: Dict[int, float] = {}
    for label, score in list(zip(labels, scores))[:top_k]:
        sums[int(label)] = sums.get(int(label), 0.0) + float(score)
    if not sums:
        return None
    best = max(sums.values())
    for label, s in sums.items():  # dicts keep insertion (rank) order
        if s == best:
            return label, s
    return None  # unreachable


def predict_one(c: Candidates, conf: Config, verified: bool = True) -> Tuple[Prediction, List[str]]:
    """Prediction and re-ranked train ids of one test image.

    Returns:
        ``(prediction, ranking)``: the ``(label, confidence)`` vote and all candidates' ids,
        the ``num_to_rerank`` first re-ranked when ``verified``, the rest in retrieval order.
    """
    n = min(conf.verify.num_to_rerank, len(c.db_ids))
    if not verified:
        return vote(c.labels[:n], c.global_scores[:n], conf.predict.top_k), list(c.db_ids)
    order, totals = rerank(c.global_scores[:n], c.inliers[:n], conf.predict)
    pred = vote(c.labels[:n][order], totals, conf.predict.top_k)
    ranking = [c.db_ids[i] for i in order] + list(c.db_ids[n:])
    return pred, ranking


def predict(conf: Config, data: Union[str, Path, Dataset], work: Union[str, Path], overwrite: bool = False) -> Path:
    """Step 4: predict one landmark per test image, with and without verification.

    Always recomputed (it takes seconds); ``overwrite`` is accepted for a uniform signature.

    Returns:
        Path of ``WORK/predictions.csv`` (one row per test id of the dataset).
    """
    work = Path(work)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    use_verification = conf.verify.enabled and verification_path(work).is_file()
    if conf.verify.enabled and not use_verification:
        logger.warning("No verification results in %s: predicting from global similarities only", work)
    candidates = load_candidates(work, dataset.labels(), conf.verify.num_to_rerank)
    out = predictions_path(work)
    n_pred = 0
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "landmark_id", "score", "global_landmark_id", "global_score"])
        for test_id in dataset.test_ids:
            c = candidates.get(test_id)
            g = v = None
            if c is not None:
                g, _ = predict_one(c, conf, verified=False)
                v = predict_one(c, conf, verified=True)[0] if use_verification else g
            n_pred += v is not None
            w.writerow([
                test_id,
                "" if v is None else v[0], "" if v is None else repr(float(v[1])),
                "" if g is None else g[0], "" if g is None else repr(float(g[1])),
            ])
    logger.info("Predicted a landmark for %d of %d test images -> %s", n_pred, len(dataset.test_ids), out)
    return out
