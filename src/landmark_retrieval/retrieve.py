"""Step 2: the k nearest train images of every test image by cosine similarity.

Output ``WORK/retrieval.h5``::

    query_ids  (Q,)   test ids (those with a global descriptor)
    db_ids     (N,)   train ids (those with a global descriptor and a label)
    indices    (Q, k) int64 rows of db_ids, most similar first
    scores     (Q, k) float32 cosine similarities

and its stamp ``WORK/retrieval.json`` (what it was computed from; a match skips the step).

Similarities are float32 products computed in memory-bounded blocks (faiss when importable),
never as one full matrix. With ``retrieve.half_precision`` the train descriptors are held as
float16 (6.5 GB instead of 12.9 GB for GLR2020's 1.58 M train images at 2048-d).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Tuple, Union

import h5py
import numpy as np

from .config import Config
from .dataset import Dataset, load_dataset
from .layout import (
    Retrieval,
    feature_dir,
    fingerprint,
    load_retrieval,
    read_stamp,
    retrieval_path,
    stamp_changes,
    write_stamp,
)
from .progress import progress
from .store import FeatureStore, publish, write_error

logger = logging.getLogger("landmark_retrieval")

_STR = h5py.string_dtype("utf-8")


def _topk_rows(sim: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k per row of a similarity block, sorted descending (ties: lower index first)."""
    n = sim.shape[1]
    if k < n:
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), (sim.shape[0], n))
    vals = np.take_along_axis(sim, part, axis=1)
    order = np.lexsort((part, -vals), axis=1) if vals.size else np.zeros_like(part)
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(part, order, axis=1)


def knn(queries: np.ndarray, database: np.ndarray, k: int, block_size: int = 4096,
        db_block_size: int = 262_144, use_faiss: bool = True,
        show_progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Exact k-nearest neighbours by inner product (cosine for unit rows).

    Args:
        queries: (Q, D) float32.
        database: (N, D) float32, or float16 to halve its memory (each block is converted to
            float32 when it is searched).
        k: neighbours per query; clipped to N.
        block_size: query rows per block; db_block_size: database rows per block, so at most
            ``block_size * db_block_size`` similarities (and one float32 database block) are in
            memory at once.
        use_faiss: use ``faiss.knn`` on each block when importable.

    Returns:
        ``scores`` (Q, k') float32 descending and ``indices`` (Q, k') int64, k' = min(k, N).

    Raises:
        TypeError: ``queries``/``database`` not numpy arrays of float16/32/64 (the dtype is
            named), ``k`` not an integer.
        ValueError: arrays that are not 2-D (the shape is named), a negative ``k``, or NaN/inf
            values (the first bad row and the count are named: faiss would
            return index -1 for such a row, i.e. silently the last train image).
    """
    for name, arr in (("queries", queries), ("database", database)):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"knn: {name} must be a numpy array (rows = descriptors), not {type(arr).__name__}")
        if arr.ndim != 2:
            raise ValueError(f"knn: {name} must be a 2-D array (rows = descriptors), got shape {arr.shape}")
        if arr.dtype not in (np.float16, np.float32, np.float64):
            raise TypeError(f"knn: {name} must have dtype float16, float32 or float64, got {arr.dtype}")
        step = max(1, (1 << 24) // max(1, arr.shape[1]))  # rows per check: a 16 MB mask, not one of N x D
        bad_rows = [t + np.flatnonzero(~np.isfinite(arr[t:t + step]).all(axis=1)) for t in range(0, len(arr), step)]
        bad = np.concatenate(bad_rows) if bad_rows else np.zeros(0, np.int64)
        if len(bad):
            raise ValueError(f"knn: {name} row {int(bad[0])} has NaN or inf values ({len(bad)} bad row(s) "
                             f"of {len(arr)}); fix or drop those descriptors")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"knn: k must be an integer, not {type(k).__name__} {k!r}")
    if k < 0:
        raise ValueError(f"knn: k must be >= 0, got {k}")
    q = np.ascontiguousarray(queries, np.float32)
    db = database if database.dtype in (np.float16, np.float32) else database.astype(np.float32)
    nq, n = len(q), len(db)
    k = int(max(0, min(k, n)))
    if nq == 0 or k == 0:
        return np.zeros((nq, k), np.float32), np.zeros((nq, k), np.int64)
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"Query descriptors have dimension {q.shape[1]} but train descriptors {db.shape[1]}")
    faiss = None
    if use_faiss:
        try:
            import faiss  # type: ignore
        except ImportError:
            faiss = None
    scores = np.empty((nq, k), np.float32)
    indices = np.empty((nq, k), np.int64)
    starts = range(0, nq, block_size)
    for s in progress(starts, desc="retrieve", unit="block", disable=not show_progress):
        qb = q[s:s + block_size]
        best_v = np.full((len(qb), 0), -np.inf, np.float32)
        best_i = np.zeros((len(qb), 0), np.int64)
        for t in range(0, n, db_block_size):
            block = np.ascontiguousarray(db[t:t + db_block_size], np.float32)
            kb = min(k, len(block))
            if faiss is not None:
                v, i = faiss.knn(qb, block, kb, metric=faiss.METRIC_INNER_PRODUCT)
                if n <= db_block_size:  # one block: faiss' answer is final
                    best_v, best_i = v, i.astype(np.int64)
                    break
            else:
                v, i = _topk_rows(qb @ block.T, kb)
            v = np.concatenate([best_v, v], axis=1)
            i = np.concatenate([best_i, i + t], axis=1)
            best_v, sel = _topk_rows(v, k)
            best_i = np.take_along_axis(i, sel, axis=1)
        scores[s:s + len(qb)], indices[s:s + len(qb)] = best_v, best_i
    return scores, indices


def retrieval_settings(conf: Config, q_ids: List[str], db_ids: List[str], work: Path) -> dict:
    """What a retrieval result is computed from (its stamp): settings, ids, train features."""
    return {
        "k": conf.retrieve.k,
        "half_precision": conf.retrieve.half_precision,
        "query_ids": fingerprint({"ids": q_ids}),
        "db_ids": fingerprint({"ids": db_ids}),
        "train_features": fingerprint(read_stamp(feature_dir(work, "train")) or {}),
        "test_features": fingerprint(read_stamp(feature_dir(work, "test")) or {}),
    }


def retrieve(conf: Config, data: Union[str, Path, Dataset], work: Union[str, Path],
             overwrite: bool = False) -> Path:
    """Find the ``conf.retrieve.k`` nearest train images of every test image.

    Train images need a global descriptor and a label in train.csv; test images without a
    global descriptor (failed extraction) get no neighbours.

    Returns:
        Path of ``WORK/retrieval.h5``.
    """
    work = Path(work)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    labels = dataset.labels()
    with FeatureStore(feature_dir(work, "train")) as train, FeatureStore(feature_dir(work, "test")) as test:
        # dataset order (train.csv rows, sorted test paths): never the order shards were written in
        have_db, have_q = set(train.global_ids), set(test.global_ids)
        db_ids = [i for i in dataset.train_ids if i in have_db and i in labels]
        q_ids = [i for i in dataset.test_ids if i in have_q]
        out = retrieval_path(work)
        settings = retrieval_settings(conf, q_ids, db_ids, work)
        changes = stamp_changes(out, settings)
        if changes is None and not overwrite:
            logger.info("Retrieval is up to date (%s)", out)
            return out
        if changes:
            logger.info("Retrieving again: %s", "; ".join(changes))
        if not db_ids:
            raise RuntimeError(f"No train image has a global descriptor in {feature_dir(work, 'train')}: "
                               "run extract first")
        db_ids, db = train.globals(db_ids, dtype=np.float16 if conf.retrieve.half_precision else np.float32)
        q_ids, q = test.globals(q_ids)
    logger.info("Retrieving %d nearest of %d train images for %d test images", conf.retrieve.k, len(db_ids), len(q_ids))
    if len(q_ids) == 0:
        q = np.zeros((0, db.shape[1]), np.float32)
    scores, indices = knn(q, db, conf.retrieve.k, block_size=conf.retrieve.block_size,
                          use_faiss=conf.retrieve.use_faiss, show_progress=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("query_ids", data=np.array(q_ids, dtype=object), dtype=_STR)
            f.create_dataset("db_ids", data=np.array(db_ids, dtype=object), dtype=_STR)
            f.create_dataset("indices", data=indices)
            f.create_dataset("scores", data=scores)
        publish(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(out, exc) from exc
    write_stamp(out, settings)
    return out


__all__ = ["knn", "retrieve", "Retrieval", "load_retrieval", "retrieval_path"]
