"""Step 4: re-rank verified candidates and vote for one landmark per test image.

For each test image the ``num_to_rerank`` nearest train images get a total score
``min(inliers, max_inlier_score) / max_inlier_score + global_weight * cosine`` and are sorted by
it (stable, so ties keep the retrieval order); the first ``top_k`` vote: each label scores the
sum of its neighbours' totals, the best label wins (ties: the label met first) and its sum is the
confidence. This is the GLR2020 host baseline. The global-only prediction is the same vote over
the ``top_k`` nearest neighbours with cosine scores.

Output ``WORK/predictions.csv``: ``id,landmark_id,score,global_landmark_id,global_score``
(empty fields when a test image has no prediction, e.g. its features could not be extracted).

Optional, all off by default (``kaggle-baseline`` is the host baseline exactly), for the
submission's ``landmark_id,score`` columns only (the global-only columns stay the plain vote):

* ``predict.confidence = "inliers"``: the confidence is ``s / (s + inlier_offset) +
  inlier_global_weight * cosine`` of the winning label's best verified candidate (most inliers
  ``s``, then highest cosine): comparable across test images, as GAP needs, where the summed
  totals also count how many neighbours share the label.
* Non-landmark handling, each multiplying the confidence of a likely distractor by a factor so
  that GAP ranks it after the others: (a) ``min_inliers``: the winning label's best candidate has
  fewer verified inliers; (b) ``test_similarity``: the test image is more similar to other test
  images than to its retrieved train images (the test x test kNN is computed here from the stored
  test descriptors, in blocks); (c) ``nonlandmark_dir``: ... or to a folder of non-landmark images
  (see :mod:`.nonlandmark`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

from .candidates import Candidates, load_candidates
from .config import Config, PredictConfig
from .dataset import Dataset, load_dataset
from .layout import Prediction, feature_dir, predictions_path, read_predictions, verification_path
from .store import write_csv_atomic

logger = logging.getLogger("landmark_retrieval")

__all__ = ["predict", "predict_one", "rank_index", "rerank", "vote", "total_scores", "Candidates", "load_candidates",
           "Prediction", "predictions_path", "read_predictions", "recognize", "best_candidate",
           "inlier_confidence", "nonlandmark_flags", "nonlandmark_similarities"]


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


def _train_similarity(conf: Config, work: Path, q_ids: List[str], q: np.ndarray,
                      candidates: Dict[str, Candidates]) -> np.ndarray:
    """(Q,) largest cosine of each test descriptor to its retrieved train images, in the space
    of the stored descriptors: the retrieval scores, or (when retrieve post-processes the
    descriptors: projection, PCA, QE, DBA) recomputed over the first ``num_to_rerank`` retrieved images."""
    from .store import FeatureStore

    r = conf.retrieve
    if r.whitening is None and r.qe_k == 0 and r.dba_k == 0 and r.projection.method is None:
        return np.array([float(candidates[i].global_scores[0]) if len(candidates[i].db_ids) else -1.0
                         for i in q_ids], np.float64)
    m = max(1, conf.verify.num_to_rerank)
    wanted = sorted({d for i in q_ids for d in candidates[i].db_ids[:m]})
    with FeatureStore(feature_dir(work, "train")) as store:
        db_ids, db = store.globals(wanted)
    row = {d: j for j, d in enumerate(db_ids)}
    out = np.full(len(q_ids), -1.0)
    for n, i in enumerate(q_ids):
        rows = [row[d] for d in candidates[i].db_ids[:m] if d in row]
        if rows:
            out[n] = float(np.max(db[rows].astype(np.float32) @ q[n]))
    return out


def nonlandmark_similarities(conf: Config, work: Union[str, Path], candidates: Dict[str, Candidates]
                             ) -> Tuple[List[str], np.ndarray, Dict[str, np.ndarray]]:
    """The similarities non-landmark rules (b) and (c) compare, for every test image with
    candidates.

    Returns:
        ``(q_ids, train (Q,), {"test": (Q, K), "nonlandmark": (Q, K)})``: the largest cosine to
        the retrieved train images, and the ``predict.nonlandmark_k`` largest to the other test
        images (``test_similarity``) and to the non-landmark images (``nonlandmark_dir``), each
        largest first. The kNN runs in blocks of ``retrieve.block_size`` test images.
    """
    from .descriptors import without_self
    from .retrieve import knn
    from .store import FeatureStore

    work = Path(work)
    p = conf.predict
    with FeatureStore(feature_dir(work, "test")) as store:
        q_ids, q = store.globals([i for i in candidates if len(candidates[i].db_ids)])
    refs: Dict[str, np.ndarray] = {}
    if not q_ids:
        return [], np.zeros(0), refs
    args = dict(block_size=conf.retrieve.block_size, use_faiss=conf.retrieve.use_faiss)
    if p.test_similarity:
        k = min(p.nonlandmark_k, len(q_ids) - 1)
        scores, indices = knn(q, q, k + 1, **args)
        refs["test"] = without_self(scores, indices, k)[0]
    if p.nonlandmark_dir:
        from .nonlandmark import nonlandmark_globals

        _, nl = nonlandmark_globals(conf, work)
        refs["nonlandmark"] = knn(q, nl, p.nonlandmark_k, **args)[0] if len(nl) else np.zeros((len(q_ids), 0))
    return q_ids, _train_similarity(conf, work, q_ids, q, candidates), refs


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
    write_csv_atomic(out, ["id", "images", "global_images"], rows)
    logger.info("Ranked index images for %d of %d test images -> %s", len(candidates), len(dataset.test_ids), out)
    return out


def _nonlandmark_penalties(conf: Config, work: Path, candidates: Dict[str, Candidates]) -> set:
    """Test ids that non-landmark rules (b) and (c) flag (empty when both are off)."""
    p = conf.predict
    if not (p.test_similarity or p.nonlandmark_dir) or not candidates:
        return set()
    q_ids, train, refs = nonlandmark_similarities(conf, work, candidates)
    flagged = np.zeros(len(q_ids), bool)
    for name, reference in refs.items():
        flags = nonlandmark_flags(reference, train, p.nonlandmark_k, p.nonlandmark_margin)
        logger.info("Non-landmark: %d of %d test images are more similar to the %s images than to the train "
                    "images (confidence x %g)", int(flags.sum()), len(q_ids), name, p.nonlandmark_factor)
        flagged |= flags
    return {i for i, f in zip(q_ids, flagged) if f}


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
    penalised = _nonlandmark_penalties(conf, work, candidates)
    for test_id in dataset.test_ids:
        c = candidates.get(test_id)
        g = v = None
        if c is not None:
            g, _ = predict_one(c, conf, verified=False)
            v = recognize(c, conf)[0] if use_verification else g
            if v is not None and test_id in penalised:
                v = (v[0], v[1] * conf.predict.nonlandmark_factor)
        n_pred += v is not None
        rows.append([
            test_id,
            "" if v is None else v[0], "" if v is None else repr(float(v[1])),
            "" if g is None else g[0], "" if g is None else repr(float(g[1])),
        ])
    write_csv_atomic(out, ["id", "landmark_id", "score", "global_landmark_id", "global_score"], rows)
    logger.info("Predicted a landmark for %d of %d test images -> %s", n_pred, len(dataset.test_ids), out)
    return out
