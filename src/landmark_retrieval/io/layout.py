"""The work directory: where every artifact of a run lives (the only module that knows).

::

    WORK/config.json                  the run's configuration (steps continue with it)
    WORK/features/{train,index,test}/ feature stores (see landmark_retrieval.io.store) + meta.json
    WORK/features/<db>/codebook.h5    codebook of aggregating backends (VLAD), fitted on the database
    WORK/features/train/projection.h5 learned projection of global descriptors (retrieve.projection)
    WORK/features/<db>/globals-f16.npy float16 copy of the database's global descriptors (streamed exact search)
    WORK/features/<db>/ann-<name>.faiss approximate search index (retrieve.index=ivfpq/hnsw)
    WORK/features/nonlandmark/        global descriptors of predict.nonlandmark_dir (non-landmark images)
    WORK/retrieval.h5 (+ .json)       k nearest train images per test image
    WORK/verification.csv (+ .json)   inliers of the re-ranked candidates
    WORK/predictions.csv              one landmark and confidence per test image
    WORK/metrics.json                 scores of the run (with a solution.csv)
    WORK/failures.csv                 images without features, or decoded with errors
    WORK/missing.csv                  train.csv ids without an image file
    WORK/shard.json                   which part of the images a sharded extract holds (extract --shard)
    WORK/provisional/                 a budgeted run's submission from incomplete features (scratch)
    WORK/collection.json              an indexed folder and its last listing (landmark_retrieval.io.collection)
    WORK/searches/<key>/              one search of an indexed folder (scratch; features/index links the index's)

Every computed artifact has a *stamp* (``meta.json`` in a store, ``<stem>.json`` beside a file):
the settings and input fingerprints it was computed from, written after it. A step whose
stamp matches skips its work; one whose stamp differs recomputes (or, for features, refuses
without ``overwrite``). This module also reads the artifacts that steps hand to each other.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from .atomic import write_text_atomic

PathLike = Union[str, Path]

SPLITS = ("train", "test")  # recognition
ALL_SPLITS = ("train", "index", "test")  # index: the retrieval task's database
TASKS = ("recognition", "retrieval")  # recognition: test vs train; retrieval: test vs index


def feature_dir(work: PathLike, split: str) -> Path:
    """Feature store of one split."""
    if split not in ALL_SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {ALL_SPLITS}")
    return Path(work) / "features" / split


def nonlandmark_feature_dir(work: PathLike) -> Path:
    """Feature store of the user's non-landmark images (``predict.nonlandmark_dir``): global
    descriptors, extracted with the run's backend."""
    return Path(work) / "features" / "nonlandmark"


def codebook_path(work: PathLike, db_split: str = "train") -> Path:
    """The codebook lives with the database's features (train, or index for the retrieval task):
    re-extracting them drops it."""
    return feature_dir(work, db_split) / "codebook.h5"


def projection_path(work: PathLike, split: str = "train") -> Path:
    """Weights of the learned projection (``retrieve.projection``), with the features of the
    split it was trained on (stamp: ``projection.json`` beside it)."""
    return feature_dir(work, split) / "projection.h5"


def database_matrix_path(work: PathLike, db_split: str = "train") -> Path:
    """float16 ``.npy`` copy of the database's global descriptors, rows in retrieval order, that
    the streamed exact search reads block by block (stamp: ``globals-f16.json`` beside it)."""
    return feature_dir(work, db_split) / "globals-f16.npy"


def search_index_path(work: PathLike, db_split: str, name: str) -> Path:
    """A saved search index (``retrieve.index``) of the database: ``ann-<name>.faiss`` for the
    faiss indexes (``ivfpq``, ``hnsw``), ``<name>.h5`` for the others (``asmk``); its stamp is
    the ``.json`` beside it."""
    return feature_dir(work, db_split) / (f"ann-{name}.faiss" if name in ("ivfpq", "hnsw") else f"{name}.h5")


def config_path(work: PathLike) -> Path:
    return Path(work) / "config.json"


def retrieval_path(work: PathLike) -> Path:
    return Path(work) / "retrieval.h5"


def verification_path(work: PathLike) -> Path:
    return Path(work) / "verification.csv"


def predictions_path(work: PathLike) -> Path:
    return Path(work) / "predictions.csv"


def metrics_path(work: PathLike) -> Path:
    return Path(work) / "metrics.json"


def failures_path(work: PathLike) -> Path:
    return Path(work) / "failures.csv"


def lock_path(work: PathLike) -> Path:
    """``WORK/.lock``: held by the run that writes in ``work`` (see :mod:`landmark_retrieval.io.lock`)."""
    return Path(work) / ".lock"


def missing_path(work: PathLike) -> Path:
    return Path(work) / "missing.csv"


def shard_record_path(work: PathLike) -> Path:
    """``{"shard": i, "count": n}``: the work directory holds the i-th of n parts of the images."""
    return Path(work) / "shard.json"


def searches_dir(work: PathLike) -> Path:
    """``WORK/searches``: the scratch work directories of ``search`` over an indexed folder."""
    return Path(work) / "searches"


def search_scratch_dir(work: PathLike, key: str) -> Path:
    """Scratch work directory of one search (``key``: its queries and settings): the query
    features, retrieval and verification, with ``features/index`` a link to the index's store.
    Removed when the search ends; a killed search's is resumed by the same search, or removed by
    the next ``index``."""
    return searches_dir(work) / key


def database_lock_dir(work: PathLike) -> Path:
    """``WORK/searches/database``: its lock is held (exclusive) by a search while it retrieves,
    so that searches build the index's derived files (``globals-f16.npy``, ANN / ASMK* indexes)
    one at a time."""
    return searches_dir(work) / "database"


def provisional_dir(work: PathLike) -> Path:
    """Scratch work directory of a budgeted run that predicts from incomplete features: links to
    the run's feature shards, plus what is computed from them (a codebook, retrieval, predictions)."""
    return Path(work) / "provisional"


# --------------------------------------------------------------------------------------------
# Stamps: what an artifact was computed from (the one staleness mechanism of every step)
# --------------------------------------------------------------------------------------------
def stamp_path(artifact: PathLike) -> Path:
    """Where the stamp of ``artifact`` lives: ``<dir>/meta.json`` for a feature store,
    ``<stem>.json`` beside a file (``retrieval.json``, ``verification.json``)."""
    artifact = Path(artifact)
    if artifact.suffix == "":  # a directory (a feature store)
        return artifact / "meta.json"
    return artifact.with_suffix(".json")


def fingerprint(settings: Mapping[str, Any]) -> str:
    """A short hash of JSON-able settings (what downstream stamps record of their inputs)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def read_stamp(artifact: PathLike) -> Optional[Dict[str, Any]]:
    """The settings ``artifact`` was computed from, or None (never computed, or unreadable)."""
    path = stamp_path(artifact)
    if not path.is_file():
        return None
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def write_stamp(artifact: PathLike, settings: Mapping[str, Any]) -> None:
    """Record the settings ``artifact`` was computed from (atomically; after the artifact)."""
    write_text_atomic(stamp_path(artifact), json.dumps(dict(settings), indent=2, sort_keys=True, default=str))


def stamp_changes(artifact: PathLike, settings: Mapping[str, Any],
                  absent: Optional[Mapping[str, Any]] = None) -> Optional[List[str]]:
    """None when ``artifact`` exists and was computed from ``settings``, else what differs.

    Args:
        absent: settings added after artifacts were stamped without them, each with the value
            that reproduces those artifacts (e.g. ``{"max_matches": None}``): a stamp, or
            ``settings``, without such a key counts as having that value, so that an upgrade
            recomputes nothing. Any other key missing on one side is a change.

    Returns:
        None (up to date), ``[]`` (no stamp: never computed or interrupted), or
        ``["key: old -> new", ...]`` for the settings that changed (``(absent)`` for a key
        missing on one side).
    """
    old = read_stamp(artifact)
    artifact = Path(artifact)
    if old is None or not artifact.exists():
        return []
    settings = json.loads(json.dumps(dict(settings), default=str))  # compare as stored
    defaults = json.loads(json.dumps(dict(absent or {}), default=str))
    old, settings = {**defaults, **old}, {**defaults, **settings}
    if old == settings:
        return None
    missing = object()

    def show(stamp: Mapping[str, Any], key: str) -> str:
        value = stamp.get(key, missing)
        return "(absent)" if value is missing else repr(value)

    keys = sorted(set(old) | set(settings))
    return [f"{k}: {show(old, k)} -> {show(settings, k)}" for k in keys
            if old.get(k, missing) != settings.get(k, missing)]


# --------------------------------------------------------------------------------------------
# Readers of the artifacts steps hand to each other
# --------------------------------------------------------------------------------------------
@dataclass
class Retrieval:
    """Neighbours of each test image (``retrieval.h5``)."""

    query_ids: List[str]
    db_ids: List[str]
    indices: np.ndarray  # (Q, k) int64 rows of db_ids, most similar first
    scores: np.ndarray  # (Q, k) float32 cosine similarities
    db_split: str = "train"  # the feature store the db ids are in ("index" for the retrieval task)
    #: label-aware re-ranking (retrieval task): landmark inferred from train neighbours (-1: none)
    query_labels: Optional[np.ndarray] = None  # (Q,) int64
    db_labels: Optional[np.ndarray] = None  # (N,) int64

    def neighbours(self, query_id: str) -> Tuple[List[str], np.ndarray]:
        """Train ids and cosine scores of one test image, best first."""
        row = self.query_ids.index(query_id)
        return [self.db_ids[j] for j in self.indices[row]], self.scores[row]


def load_retrieval(path: PathLike) -> Retrieval:
    """Read ``retrieval.h5`` (a work directory is accepted too)."""
    import h5py

    path = Path(path)
    if path.is_dir():
        path = retrieval_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No retrieval result at {path}: run the retrieve step first")
    with h5py.File(path, "r") as f:
        return Retrieval(
            query_ids=list(f["query_ids"].asstr()[()]),
            db_ids=list(f["db_ids"].asstr()[()]),
            indices=f["indices"][()],
            scores=f["scores"][()],
            db_split=str(f.attrs.get("db_split", "train")),
            query_labels=f["query_labels"][()] if "query_labels" in f else None,
            db_labels=f["db_labels"][()] if "db_labels" in f else None,
        )


def retrieval_db_split(work: PathLike) -> str:
    """The split a run's test images were matched against (``train``, or ``index``)."""
    import h5py

    path = retrieval_path(work)
    if not path.is_file():
        return "train"
    with h5py.File(path, "r") as f:
        return str(f.attrs.get("db_split", "train"))


VERIFICATION_COLUMNS = ["query_id", "rank", "db_id", "num_matches", "inliers"]


def load_verification(path: PathLike) -> Dict[str, Dict[str, Tuple[int, int]]]:
    """Read ``verification.csv`` as ``{query_id: {db_id: (num_matches, inliers)}}``.

    An incomplete last record (an interrupted write) is ignored, as are malformed rows.
    """
    out: Dict[str, Dict[str, Tuple[int, int]]] = {}
    path = Path(path)
    if path.is_dir():
        path = verification_path(path)
    if not path.is_file():
        return out
    with open(path, "rb") as fb:
        complete = True
        if fb.seek(0, os.SEEK_END) > 0:
            fb.seek(-1, os.SEEK_END)
            complete = fb.read(1) == b"\n"
    rows: List[List[str]] = []
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, strict=True)
        try:
            for row in reader:
                rows.append(row)
        except csv.Error:  # ends inside a quoted field: the last record is incomplete
            complete = False
    if rows and not complete:
        rows.pop()
    for row in rows:
        if len(row) != 5 or row == VERIFICATION_COLUMNS:
            continue
        try:
            out.setdefault(row[0], {})[row[2]] = (int(row[3]), int(row[4]))
        except ValueError:
            continue
    return out


Prediction = Optional[Tuple[int, float]]


def read_predictions(path: PathLike, verified: bool = True) -> Dict[str, Prediction]:
    """Read ``predictions.csv``: ``{test id: (label, score) or None}``."""
    path = Path(path)
    if path.is_dir():
        path = predictions_path(path)
    col_l, col_s = ("landmark_id", "score") if verified else ("global_landmark_id", "global_score")
    out: Dict[str, Prediction] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out[row["id"]] = (int(row[col_l]), float(row[col_s])) if row[col_l] else None
    return out


def read_rankings(path: PathLike, verified: bool = True) -> Dict[str, List[str]]:
    """Read the retrieval task's ``predictions.csv``: ``{test id: ranked index ids}``."""
    path = Path(path)
    if path.is_dir():
        path = predictions_path(path)
    column = "images" if verified else "global_images"
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["id"]: row[column].split() for row in csv.DictReader(fh)}
