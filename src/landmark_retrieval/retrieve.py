"""Step 2: the k nearest train images of every test image by cosine similarity.

Output ``WORK/retrieval.h5``::

    query_ids  (Q,)   test ids (those with a global descriptor)
    db_ids     (N,)   train ids (those with a global descriptor and a label)
    indices    (Q, k) int64 rows of db_ids, most similar first
    scores     (Q, k) float32 cosine similarities

and its stamp ``WORK/retrieval.json`` (what it was computed from; a match skips the step).

With ``retrieve.projection`` the descriptors first go through a learned projection (trained
once, saved with the train features; see :mod:`landmark_retrieval.search.projection`), then through
PCA/whitening, DBA and QE (:mod:`landmark_retrieval.search.postprocess`).

Similarities are float32 products computed in memory-bounded blocks (faiss when importable),
never as one full matrix. With ``retrieve.half_precision`` the train descriptors are held as
float16 (6.5 GB instead of 12.9 GB for GLR2020's 1.58 M train images at 2048-d). A large
database (``retrieve.stream``, automatic above ``retrieve.stream_above_gb``) is written once as a
float16 matrix on disk and streamed in blocks instead (:mod:`landmark_retrieval.search`, same
neighbours); ``retrieve.index`` selects an approximate faiss index instead (``ivfpq``, ``hnsw``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import h5py
import numpy as np

from .config import Config
from .io.atomic import publish, write_error
from .io.dataset import Dataset, load_dataset
from .io.layout import (
    database_matrix_path,
    feature_dir,
    fingerprint,
    read_stamp,
    retrieval_path,
    search_index_path,
    stamp_changes,
    write_stamp,
)
from .io.store import FeatureStore, write_array
from .search import get_searcher, index_settings
from .search.exact import DiskMatrix, SearchContext, cached_matrix, knn
from .search.postprocess import Projection, expand, fit_pca, without_self
from .search.projection_fit import fit_projection, projection_fingerprint

logger = logging.getLogger("landmark_retrieval")

_STR = h5py.string_dtype("utf-8")


def retrieval_settings(conf: Config, q_ids: List[str], db_ids: List[str], work: Path) -> dict:
    """What a retrieval result is computed from (its stamp): settings, ids, train features."""
    r = conf.retrieve
    return {
        "k": r.k,
        "half_precision": r.half_precision,
        "postprocess": [r.whitening, r.pca_dim, r.dba_k, r.dba_alpha, r.qe_k, r.qe_alpha],
        "query_ids": fingerprint({"ids": q_ids}),
        "db_ids": fingerprint({"ids": db_ids}),
        "train_features": fingerprint(read_stamp(feature_dir(work, "train")) or {}),
        "test_features": fingerprint(read_stamp(feature_dir(work, "test")) or {}),
    }


def infer_labels(scores: np.ndarray, indices: np.ndarray, train_labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Landmark of each row from its nearest labelled images: the label with the largest summed
    cosine among the neighbours (ties: the label met first).

    Args:
        scores: (M, k) float32 cosine of each row's neighbours, best first.
        indices: (M, k) int64 rows of ``train_labels``.
        train_labels: (N,) int64.

    Returns:
        ``labels`` (M,) int64 (-1 for a row without neighbours) and their summed cosine (M,) float32.
    """
    labels = np.full(len(indices), -1, np.int64)
    sums = np.zeros(len(indices), np.float32)
    for row in range(len(indices)):
        votes: Dict[int, float] = {}
        for j, sim in zip(indices[row], scores[row]):
            label = int(train_labels[j])
            votes[label] = votes.get(label, 0.0) + float(sim)
        if votes:
            best = max(votes.values())
            labels[row] = next(lb for lb, v in votes.items() if v == best)
            sums[row] = best
    return labels, sums


def _postprocess_database(conf: Config, db: np.ndarray, dtype: type, knn_args: dict,
                          store_dir: Path) -> Tuple[Optional[Projection], np.ndarray]:
    """PCA / PCA-whitening (learned on the database, saved as ``pca.h5`` beside its features)
    and database-side augmentation of the database descriptors (N, D) -> (N, d)."""
    r = conf.retrieve
    if r.whitening not in (None, "pca", "whiten"):
        raise ValueError(f"retrieve.whitening: expected none, pca or whiten, got {r.whitening!r}")
    projection = None
    if r.whitening is not None:
        projection = fit_pca(db, r.pca_dim, whiten=r.whitening == "whiten")
        logger.info("%s: %d -> %d dimensions, learned on %d database descriptors",
                    "PCA-whitening" if projection.whiten else "PCA", db.shape[1], projection.dim, len(db))
        write_array(store_dir / "pca.h5", "matrix", projection.matrix)
        db = projection.apply(db, dtype=dtype)
    if r.dba_k > 0 and len(db) > 1:
        logger.info("Database-side augmentation over %d neighbours (alpha %g)", r.dba_k, r.dba_alpha)
        k = min(r.dba_k, len(db) - 1)
        s, n = without_self(*knn(np.asarray(db, np.float32), db, k + 1, **knn_args), k)
        db = expand(db, n, s, db, r.dba_alpha).astype(dtype, copy=False)
    return projection, db


def _streams(conf: Config, store: FeatureStore, db_ids: List[str]) -> bool:
    """Whether the exact search streams the database from disk (``retrieve.stream``; none: when
    its float32 matrix would exceed ``retrieve.stream_above_gb``)."""
    r = conf.retrieve
    if r.stream is None:
        dim = store.globals(db_ids[:1])[1].shape[1] if db_ids else 0
        stream = len(db_ids) * dim * 4 > r.stream_above_gb * 2 ** 30
    else:
        stream = bool(r.stream)
    if stream and r.dba_k > 0:
        raise ValueError("retrieve.dba_k > 0 needs the database in memory (it searches the database for every "
                         "database image): set retrieve.stream=false (and enough memory), or retrieve.dba_k=0")
    return stream


def _database_on_disk(work: Path, db_split: str, store: FeatureStore, db_ids: List[str],
                      chunk: int = 65536) -> DiskMatrix:
    """The database's global descriptors (rows in ``db_ids`` order) as a float16 matrix on disk,
    written once (``layout.database_matrix_path``) and reused while ids and features are the same."""
    dim = store.globals(db_ids[:1])[1].shape[1]
    settings = {"db_ids": fingerprint({"ids": db_ids}),
                "features": fingerprint(read_stamp(feature_dir(work, db_split)) or {})}

    def blocks():
        for s in range(0, len(db_ids), chunk):
            yield store.globals(db_ids[s:s + chunk], dtype=np.float16)[1]

    return cached_matrix(database_matrix_path(work, db_split), settings, len(db_ids), dim, blocks)


def retrieve(conf: Config, data: Union[str, Path, Dataset], work: Union[str, Path],
             overwrite: bool = False) -> Path:
    """Step 2: find the ``conf.retrieve.k`` nearest database images of every test image.

    The database is the train split (recognition: images need a label in train.csv) or the
    index split (retrieval). Test images without a global descriptor (failed extraction) get no
    neighbours. With ``retrieve.label_aware`` (retrieval task with train.csv) the landmark of
    every test and index image is inferred from its ``label_k`` nearest train images.

    Returns:
        Path of ``WORK/retrieval.h5``.
    """
    work = Path(work)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    db_split = dataset.db_split
    labels = dataset.labels()
    label_aware = dataset.task == "retrieval" and conf.retrieve.label_aware
    if label_aware and not dataset.has_train:
        logger.warning("retrieve.label_aware needs train.csv and train/ in %s: ranking without labels", dataset.root)
        label_aware = False
    with FeatureStore(feature_dir(work, db_split)) as dbs, FeatureStore(feature_dir(work, "test")) as test:
        # dataset order (train.csv rows, sorted paths): never the order shards were written in
        have_db, have_q = set(dbs.global_ids), set(test.global_ids)
        db_ids = [i for i in dataset.ids(db_split) if i in have_db and (db_split != "train" or i in labels)]
        q_ids = [i for i in dataset.test_ids if i in have_q]
        out = retrieval_path(work)
        settings = retrieval_settings(conf, q_ids, db_ids, work)
        settings.update(db_split=db_split, label_aware=label_aware)
        if label_aware:
            settings.update(label_k=conf.retrieve.label_k,
                            train_features=fingerprint(read_stamp(feature_dir(work, "train")) or {}))
        projection_stamp = projection_fingerprint(conf, dataset, work)
        if projection_stamp is not None:  # recorded only when on: earlier runs' stamps stay valid
            settings["projection"] = projection_stamp
        if conf.retrieve.index != "exact":  # recorded only when approximate (exact: same neighbours)
            settings["index"] = index_settings(conf.retrieve)
        streamed = bool(db_ids) and _streams(conf, dbs, db_ids)
        if streamed and not conf.retrieve.half_precision:  # the streamed matrix is float16
            settings["half_precision"] = "streamed"
        changes = stamp_changes(out, settings)
        if changes is None and not overwrite:
            logger.info("Retrieval is up to date (%s)", out)
            return out
        if changes:
            logger.info("Retrieving again: %s", "; ".join(changes))
        if not db_ids:
            raise RuntimeError(f"No {db_split} image has a global descriptor in {feature_dir(work, db_split)}: "
                               "run extract first")
        dtype = np.float16 if conf.retrieve.half_precision or streamed else np.float32
        database_key = {"db_ids": settings["db_ids"], "db_split": db_split, "half_precision": dtype == np.float16,
                        "features": fingerprint(read_stamp(feature_dir(work, db_split)) or {}),
                        "postprocess": settings["postprocess"][:4], "projection": projection_stamp}
        db: Union[np.ndarray, DiskMatrix]
        if streamed:
            db = _database_on_disk(work, db_split, dbs, db_ids)
        else:
            db_ids, db = dbs.globals(db_ids, dtype=dtype)
        q_ids, q = test.globals(q_ids)
    if len(q_ids) == 0:
        q = np.zeros((0, db.shape[1]), np.float32)
    knn_args = dict(block_size=conf.retrieve.block_size, use_faiss=conf.retrieve.use_faiss, show_progress=True,
                    stream_block=conf.retrieve.stream_block)
    projector = fit_projection(conf, dataset, work)  # learned projection first, then PCA/whitening
    if isinstance(db, DiskMatrix) and (projector is not None or conf.retrieve.whitening is not None):
        db = db.memmap()  # projected in blocks into a (smaller) matrix in memory
    if projector is not None:
        db, q = projector.apply(db, dtype=dtype), projector.apply(q)
    projection, db = _postprocess_database(conf, db, dtype, knn_args, feature_dir(work, db_split))
    if projection is not None:
        q = projection.apply(q)
    logger.info("Retrieving %d nearest of %d %s images for %d test images", conf.retrieve.k, len(db_ids), db_split,
                len(q_ids))
    search = get_searcher(conf.retrieve.index)
    context = SearchContext(conf.retrieve, index_path=lambda name: search_index_path(work, db_split, name),
                            database_key=database_key, knn_args=knn_args, work=work, db_split=db_split,
                            query_ids=q_ids, db_ids=db_ids)
    scores, indices = search(q, db, conf.retrieve.k, context)
    if conf.retrieve.qe_k > 0 and len(q):
        logger.info("Query expansion over %d neighbours (alpha %g)", conf.retrieve.qe_k, conf.retrieve.qe_alpha)
        q = expand(q, indices[:, :conf.retrieve.qe_k], scores[:, :conf.retrieve.qe_k], db, conf.retrieve.qe_alpha)
        scores, indices = search(q, db, conf.retrieve.k, context)
    extra: Dict[str, np.ndarray] = {}
    if label_aware:
        with FeatureStore(feature_dir(work, "train")) as train:
            have = set(train.global_ids)
            train_ids, tr = train.globals([i for i in dataset.train_ids if i in have and i in labels], dtype=dtype)
        if not train_ids:
            raise RuntimeError(f"No train image has a global descriptor in {feature_dir(work, 'train')}: run extract "
                               "first (retrieve.label_aware extracts the train split too)")
        if projector is not None:
            tr = projector.apply(tr, dtype=dtype)
        if projection is not None:
            tr = projection.apply(tr, dtype=dtype)
        train_labels = np.array([labels[i] for i in train_ids], np.int64)
        logger.info("Inferring landmarks of %d test and %d index images from %d train images",
                    len(q_ids), len(db_ids), len(train_ids))
        extra["query_labels"] = infer_labels(*knn(q, tr, conf.retrieve.label_k, **knn_args), train_labels)[0]
        db32 = np.asarray(db.memmap() if isinstance(db, DiskMatrix) else db, np.float32)
        extra["db_labels"] = infer_labels(*knn(db32, tr, conf.retrieve.label_k, **knn_args), train_labels)[0]
    tmp = out.with_name(out.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("query_ids", data=np.array(q_ids, dtype=object), dtype=_STR)
            f.create_dataset("db_ids", data=np.array(db_ids, dtype=object), dtype=_STR)
            f.create_dataset("indices", data=indices)
            f.create_dataset("scores", data=scores)
            for name, array in extra.items():
                f.create_dataset(name, data=array)
            f.attrs["db_split"] = db_split
        publish(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(out, exc) from exc
    write_stamp(out, settings)
    return out


