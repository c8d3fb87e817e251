"""Training and storing the learned projection of global descriptors (``retrieve.projection``):
the run glue around :mod:`landmark_retrieval.search.projection`.

Samples the database's stored descriptors (and, for SimCLR, augmented views re-described by the
run's backend exactly as at extraction), trains once, and stores the weights with a stamp in
``WORK/features/<split>/projection.h5``; a change of settings, features or training data retrains.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Union

import h5py
import numpy as np

from ..backends.base import store_meta
from ..backends.extraction import stable_seed, usable_global
from ..backends.registry import make_backend
from ..io.atomic import publish, write_error
from ..io.images import iter_images
from ..io.layout import (
    codebook_path,
    feature_dir,
    fingerprint,
    projection_path,
    read_stamp,
    stamp_changes,
    write_stamp,
)
from ..io.progress import progress
from ..io.store import FeatureStore, read_array
from .projection import (
    COMMON_OPTIONS,
    PROJECTION_METHODS,
    Projector,
    augment,
    mine_pairs,
    sample_by_landmark,
    sample_images,
    train_siamese,
    train_simclr,
)

if TYPE_CHECKING:  # config imports this module lazily (validation); no cycle at run time
    from ..config import Config
    from ..io.dataset import Dataset

logger = logging.getLogger("landmark_retrieval")



def projection_settings(conf: "Config") -> Optional[Dict[str, object]]:
    """The settings a projection is trained from (None when ``retrieve.projection.method`` is
    none): the method and the options it reads."""
    p = conf.retrieve.projection
    if p.method is None:
        return None
    method = PROJECTION_METHODS[p.method]
    out: Dict[str, object] = {"method": p.method}
    out.update({name: getattr(p, name) for name in COMMON_OPTIONS + method.options})
    if not method.needs_labels:
        out["max_pixels"] = conf.extract.max_pixels  # how views are decoded
    return out


def projection_split(conf: "Config", dataset: "Dataset") -> str:
    """The split a projection is trained on: ``train`` (labels), else the database split."""
    method = PROJECTION_METHODS[conf.retrieve.projection.method]
    if method.needs_labels:
        if not dataset.has_train:
            raise ValueError(f"retrieve.projection.method={method.name} trains on train.csv labels, and "
                             f"{dataset.root} has no labelled train images: add train.csv and train/, or set "
                             "retrieve.projection.method=simclr (no labels) or none")
        return "train"
    return dataset.db_split


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_projector(path: Path, projector: Projector, losses: Sequence[float]) -> None:
    """Save the layers (``w0``, ``b0``, ``w1``, ...) and the loss per epoch, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:  # no timestamps anywhere: same weights, same bytes
            for n, (w, b) in enumerate(projector.layers):
                f.create_dataset(f"w{n}", data=w, track_times=False)
                f.create_dataset(f"b{n}", data=b, track_times=False)
            f.create_dataset("losses", data=np.asarray(losses, np.float64), track_times=False)
            f.attrs["method"] = projector.method
        publish(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc


def read_projector(path: Union[str, Path]) -> Optional[Projector]:
    """The projector saved at ``path``, or None (absent or unreadable)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            layers = []
            while f"w{len(layers)}" in f:
                n = len(layers)
                layers.append((f[f"w{n}"][()].astype(np.float32), f[f"b{n}"][()].astype(np.float32)))
            method = str(f.attrs.get("method", ""))
    except OSError:
        return None
    return Projector(layers, method) if layers else None


def _describe_view(backend, image: np.ndarray, codebook: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """The global descriptor of one image as extraction computes it (None when unusable)."""
    if backend.aggregator is not None:
        feats = backend.extract(image, local=True, global_=False)
        vector = backend.aggregator.encode(feats.descriptors, codebook)
    else:
        vector = backend.extract(image, local=False, global_=True).global_descriptor
    return np.asarray(vector, np.float32) if usable_global(vector) else None


def describe_views(conf: "Config", dataset: "Dataset", work: Path, split: str, ids: Sequence[str],
                   stored: np.ndarray) -> np.ndarray:
    """(N, views + 1, D) float32: each image's stored descriptor, then its augmented views
    described by the run's backend (a view without a usable descriptor repeats the stored one).

    Raises:
        ValueError: the run's extract settings differ from the features' (``meta.json``), or an
            aggregating backend's codebook is missing.
    """
    p = conf.retrieve.projection
    backend = make_backend(conf.extract)
    expected = store_meta(backend, conf.extract.max_pixels)
    meta = read_stamp(feature_dir(work, split)) or {}
    if any(meta.get(k) != v for k, v in expected.items()):
        raise ValueError("retrieve.projection.method=simclr describes augmented views with the run's extract "
                         f"settings, and the features in {feature_dir(work, split)} were extracted with other ones: "
                         "run extract (with --overwrite) first, or use the settings the features were made with")
    codebook = None
    if backend.aggregator is not None:
        codebook = read_array(codebook_path(work, dataset.db_split), "codebook")
        if codebook is None:
            raise ValueError(f"No codebook at {codebook_path(work, dataset.db_split)}: run extract first")
    out = np.repeat(np.asarray(stored, np.float32)[:, None, :], p.views + 1, axis=1)
    items = ((i, dataset.path(split, i)) for i in ids)
    row = {i: n for n, i in enumerate(ids)}
    for image_id, decoded, error in progress(iter_images(items, num_workers=conf.extract.num_workers,
                                                         max_pixels=conf.extract.max_pixels),
                                             total=len(ids), desc="projection views", unit="img"):
        if decoded is None:
            logger.warning("Projection (simclr): %s image %s: %s; using its stored descriptor only", split, image_id,
                           error)
            continue
        for v in range(p.views):
            rng = np.random.default_rng(stable_seed(p.seed, f"{v}/{image_id}"))
            vector = _describe_view(backend, augment(decoded.array, rng), codebook)
            if vector is not None:
                out[row[image_id], v + 1] = vector
    return out


def fit_projection(conf: "Config", dataset: "Dataset", work: Union[str, Path]) -> Optional[Projector]:
    """The projection of ``retrieve.projection``: the saved one when its stamp matches (same
    settings, same training descriptors and labels), else trained now and saved with the
    features of the split it is trained on (:func:`projection_split`). None when the method is
    none.

    Raises:
        ValueError: no labelled train images for ``siamese``, too few images, features made with
            other settings (``simclr``); ImportError: TensorFlow missing (when training).
    """
    settings = projection_settings(conf)
    if settings is None:
        return None
    p = conf.retrieve.projection
    method = PROJECTION_METHODS[p.method]
    split = projection_split(conf, dataset)
    labels_of = dataset.labels() if method.needs_labels else {}
    directory = feature_dir(work, split)
    with FeatureStore(directory) as store:
        have = set(store.global_ids)
        ids = sorted(i for i in dataset.ids(split) if i in have and (not method.needs_labels or i in labels_of))
        rng = np.random.default_rng([int(p.seed), 0])
        if method.needs_labels:
            if not ids:
                raise ValueError(f"retrieve.projection.method=siamese: no labelled train image has a global descriptor "
                                 f"in {directory} (train.csv lists {len(labels_of)}): run extract first, or set "
                                 "retrieve.projection.method=simclr (no labels) or none")
            labels = np.array([labels_of[i] for i in ids], np.int64)
            pick = sample_by_landmark(labels, p.max_images, p.positives + 1, rng)
        else:
            pick = sample_images(len(ids), p.max_images, rng)
        ids = [ids[j] for j in pick]
        ids, x = store.globals(ids)
    labels = np.array([labels_of[i] for i in ids], np.int64) if method.needs_labels else np.zeros(0, np.int64)
    if len(ids) < 2:
        raise ValueError(f"retrieve.projection.method={p.method}: {len(ids)} {split} image(s) with a global descriptor "
                         f"in {directory}; at least 2 are needed")
    path = projection_path(work, split)
    stamp = {**settings, "split": split, "features": fingerprint(read_stamp(directory) or {}),
             "inputs": _digest(np.array(ids, dtype=object).astype(str), x, labels)}
    saved = read_projector(path) if stamp_changes(path, stamp) is None else None
    if saved is not None and saved.input_dim == x.shape[1]:
        logger.info("Projection (%s) is up to date (%s)", p.method, path)
        return saved
    logger.info("Training the projection (%s, %d -> %s%d) on %d %s images", p.method, x.shape[1],
                f"{p.hidden_dim} -> " if p.hidden_dim else "", p.dim, len(ids), split)
    if method.name == "siamese":
        a, b, y = mine_pairs(x, labels, p.positives, p.negatives, p.max_pairs, rng)
        logger.info("Projection (siamese): %d pairs (%d positive)", len(a), int(y.sum()))
        result = train_siamese(x, a, b, y, p)
    else:
        result = train_simclr(describe_views(conf, dataset, Path(work), split, ids, x), p)
    projector = Projector(result.layers, p.method)
    write_projector(path, projector, result.losses)
    write_stamp(path, stamp)
    return projector


def projection_fingerprint(conf: "Config", dataset: "Dataset", work: Union[str, Path]) -> Optional[Dict[str, object]]:
    """What a retrieval records of its projection: the settings and the split's features."""
    settings = projection_settings(conf)
    if settings is None:
        return None
    split = projection_split(conf, dataset)
    return {**settings, "split": split, "features": fingerprint(read_stamp(feature_dir(work, split)) or {})}
