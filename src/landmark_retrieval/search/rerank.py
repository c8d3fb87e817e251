"""Re-ranking and the per-label vote: from a test image's candidates (global scores, verified
inliers, labels) to one landmark and confidence, or to a ranked list of index images.

Pure computation on :class:`~landmark_retrieval.io.candidates.Candidates`; the predict step
(:mod:`landmark_retrieval.predict`, whose docstring gives the rules) writes their results, and
``evaluate``/``show`` recompute them with other settings without re-running the step.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..config import Config, PredictConfig
from ..io.candidates import Candidates
from ..io.layout import Prediction

logger = logging.getLogger("landmark_retrieval")



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


def best_candidate(labels: np.ndarray, inliers: np.ndarray, global_scores: np.ndarray, label: int) -> int:
    """Row of the best candidate of ``label``: most inliers, then highest cosine, then first.

    Args:
        labels, inliers, global_scores: (R,) arrays of the re-ranked candidates, retrieval order.
        label: a label that occurs in ``labels``.

    Raises:
        ValueError: ``label`` is not among ``labels``.
    """
    rows = np.flatnonzero(np.asarray(labels) == label)
    if not len(rows):
        raise ValueError(f"Label {label} is not among the candidates' labels")
    inl = np.asarray(inliers, np.int64)[rows]
    cos = np.asarray(global_scores, np.float64)[rows]
    order = np.lexsort((rows, -cos, -inl))  # last key first: inliers desc, cosine desc, row asc
    return int(rows[order[0]])


def inlier_confidence(inliers: int, cosine: float, offset: float, global_weight: float) -> float:
    """``inliers / (inliers + offset) + global_weight * cosine``: in [0, 1) from the inliers,
    plus a share of the global similarity (a small ``global_weight`` only breaks ties)."""
    return float(inliers) / (float(inliers) + float(offset)) + float(global_weight) * float(cosine)


def recognize(c: Candidates, conf: Config) -> Tuple[Prediction, int]:
    """The verified prediction of one test image with ``predict.confidence`` and non-landmark
    rule (a) (``predict.min_inliers``) applied.

    Returns:
        ``((label, confidence) or None, inliers of the winning label's best candidate)``; with the
        defaults the prediction is :func:`predict_one`'s (the host baseline).
    """
    pred, _ = predict_one(c, conf, verified=True)
    if pred is None:
        return None, 0
    p = conf.predict
    n = min(conf.verify.num_to_rerank, len(c.db_ids))
    j = best_candidate(c.labels[:n], c.inliers[:n], c.global_scores[:n], pred[0])
    inl = int(c.inliers[j])
    label, score = pred
    if p.confidence == "inliers":
        score = inlier_confidence(inl, float(c.global_scores[j]), p.inlier_offset, p.inlier_global_weight)
    if p.min_inliers > 0 and inl < p.min_inliers:
        score *= p.unverified_factor
    return (label, score), inl


def nonlandmark_flags(reference: np.ndarray, train: np.ndarray, k: int, margin: float) -> np.ndarray:
    """Test images more similar to a reference set (other test images, non-landmark images) than
    to the train images.

    Args:
        reference: (Q, K) cosine similarities to the reference set, largest first (K may be 0).
        train: (Q,) largest cosine similarity to the train images.
        k: how many of the largest reference similarities are averaged (at most K are).
        margin: the averaged reference similarity must exceed ``train`` by more than this.

    Returns:
        (Q,) bool.
    """
    reference = np.asarray(reference, np.float64)
    train = np.asarray(train, np.float64)
    if reference.ndim != 2 or len(reference) != len(train):
        raise ValueError(f"Expected reference (Q, K) and train (Q,) similarities, got {reference.shape} and "
                         f"{train.shape}")
    kk = min(int(k), reference.shape[1])
    if kk < 1:
        return np.zeros(len(train), bool)
    return reference[:, :kk].mean(axis=1) > train + margin


def rank_index(c: Candidates, conf: Config, verified: bool = True, label_aware: bool = False) -> List[str]:
    """Ranked index ids of one test image (retrieval task).

    Args:
        verified: re-rank the first ``num_to_rerank`` by total score (as :func:`predict_one`).
        label_aware: add ``predict.label_weight`` to the score (total score for the re-ranked
            candidates, cosine for the others) of every index image whose inferred landmark is
            the query's, then sort by score (stable); needs ``retrieve.label_aware``.
    """
    ranking = predict_one(c, conf, verified=verified)[1]
    if not label_aware or c.query_label < 0:
        return ranking
    n = min(conf.verify.num_to_rerank, len(c.db_ids)) if verified else 0
    base = c.global_scores.astype(np.float64) * conf.predict.global_weight
    if n:
        base[:n] = total_scores(c.global_scores[:n], c.inliers[:n], conf.predict.max_inlier_score,
                                conf.predict.global_weight)
    position = {db_id: i for i, db_id in enumerate(c.db_ids)}
    rows = np.array([position[i] for i in ranking], np.int64)
    score = base[rows] + conf.predict.label_weight * (c.labels[rows] == c.query_label)
    return [ranking[i] for i in np.argsort(-score, kind="stable")]
