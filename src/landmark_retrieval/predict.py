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
  described by the extract step (:func:`landmark_retrieval.extract.extract_nonlandmark`).

The decisions themselves (re-ranking, vote, confidence) are in :mod:`landmark_retrieval.search.rerank`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

from .config import Config
from .io.atomic import write_csv_atomic
from .io.candidates import Candidates, load_candidates
from .io.dataset import Dataset, load_dataset
from .io.layout import feature_dir, predictions_path, retrieval_db_split, verification_path
from .io.nonlandmark import load_nonlandmark_globals
from .io.store import FeatureStore
from .search.exact import knn
from .search.postprocess import without_self
from .search.rerank import nonlandmark_flags, predict_one, rank_index, recognize

logger = logging.getLogger("landmark_retrieval")


def _train_similarity(conf: Config, work: Path, q_ids: List[str], q: np.ndarray,
                      candidates: Dict[str, Candidates]) -> np.ndarray:
    """(Q,) largest cosine of each test descriptor to its retrieved train images, in the space
    of the stored descriptors: the retrieval scores, or (when retrieve post-processes the
    descriptors: projection, PCA, QE, DBA) recomputed over the first ``num_to_rerank`` retrieved images."""
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
        _, nl = load_nonlandmark_globals(p.nonlandmark_dir, work, retrieval_db_split(work))
        refs["nonlandmark"] = knn(q, nl, p.nonlandmark_k, **args)[0] if len(nl) else np.zeros((len(q_ids), 0))
    return q_ids, _train_similarity(conf, work, q_ids, q, candidates), refs


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
