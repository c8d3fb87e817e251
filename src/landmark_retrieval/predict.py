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
import io
import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

from .candidates import Candidates, load_candidates
from .config import Config, PredictConfig
from .dataset import Dataset, load_dataset
from .layout import Prediction, predictions_path, read_predictions, verification_path
from .store import write_text_atomic

logger = logging.getLogger("landmark_retrieval")

__all__ = ["predict", "predict_one", "rank_index", "rerank", "vote", "total_scores", "Candidates", "load_candidates",
           "Prediction", "predictions_path", "read_predictions"]



def total_scores(global_scores: np.ndarray, inliers: np.ndarray, max_inlier_score: int,
                 global_weight: float = 1.0) -> np.ndarray:
    """``min(inliers, cap) / cap + global_weight * cosine`` for (R,) arrays -> (R,) float64."""
    g = np.asarray(global_scores, np.float64)
    local = np.minimum(np.asarray(inliers, np.float64), max_inlier_score) / float(max_inlier_score)
    return local + global_weight * g


def write_csv(path: Path, header: Sequence[str], rows) -> Path:
    """Write a CSV with the ``csv`` module, atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


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


def _predict_retrieval(conf: Config, dataset: Dataset, work: Path, use_verification: bool) -> Path:
    label_aware = conf.retrieve.label_aware and dataset.has_train
    candidates = load_candidates(work, None, conf.verify.num_to_rerank)
    out = predictions_path(work)
    rows = []
    for test_id in dataset.test_ids:
        c = candidates.get(test_id)
        if c is None:
            rows.append([test_id, "", ""])
            continue
        final = rank_index(c, conf, verified=use_verification, label_aware=label_aware)
        rows.append([test_id, " ".join(final[:100]), " ".join(c.db_ids[:100])])
    write_csv(out, ["id", "images", "global_images"], rows)
    logger.info("Ranked index images for %d of %d test images -> %s", len(candidates), len(dataset.test_ids), out)
    return out


def predict(conf: Config, data: Union[str, Path, Dataset], work: Union[str, Path], overwrite: bool = False) -> Path:
    """Step 4: predict one landmark per test image, with and without verification (recognition),
    or rank up to 100 index images per test image (retrieval).

    Always recomputed (it takes seconds); ``overwrite`` is accepted for a uniform signature.

    Returns:
        Path of ``WORK/predictions.csv`` (one row per test id of the dataset).
    """
    work = Path(work)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    use_verification = conf.verify.enabled and verification_path(work).is_file()
    if conf.verify.enabled and not use_verification:
        logger.warning("No verification results in %s: predicting from global similarities only", work)
    if dataset.task == "retrieval":
        return _predict_retrieval(conf, dataset, work, use_verification)
    candidates = load_candidates(work, dataset.labels(), conf.verify.num_to_rerank)
    out = predictions_path(work)
    n_pred = 0
    rows = []
    for test_id in dataset.test_ids:
        c = candidates.get(test_id)
        g = v = None
        if c is not None:
            g, _ = predict_one(c, conf, verified=False)
            v = predict_one(c, conf, verified=True)[0] if use_verification else g
        n_pred += v is not None
        rows.append([
            test_id,
            "" if v is None else v[0], "" if v is None else repr(float(v[1])),
            "" if g is None else g[0], "" if g is None else repr(float(g[1])),
        ])
    write_csv(out, ["id", "landmark_id", "score", "global_landmark_id", "global_score"], rows)
    logger.info("Predicted a landmark for %d of %d test images -> %s", n_pred, len(dataset.test_ids), out)
    return out
