"""The per-split extraction loop: decode every image of a split, run the backend, write the
feature store (resumable, atomic shards, a background writer), and the global descriptors of
aggregating backends (codebook fit on the database, then encoding).

The extract step (:mod:`landmark_retrieval.extract`) drives it; the Dask engine
(:mod:`landmark_retrieval.backends.cluster`) runs it on a cluster's workers, and the learned
projection re-describes augmented views with its helpers.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Dict, Optional, Protocol, Sequence, Union

import numpy as np

from ..features import Features
from ..io.atomic import write_csv_atomic
from ..io.dataset import Dataset
from ..io.images import DecodedImage, iter_images, scale_keypoints_back
from ..io.layout import codebook_path, missing_path
from ..io.progress import progress
from ..io.store import FeatureStore, read_array, write_array
from ..io.writer import BackgroundWriter, ShardWriter
from .base import Backend

logger = logging.getLogger("landmark_retrieval")


class Engine(Protocol):
    """Where images are extracted other than in this process (e.g.
    :class:`landmark_retrieval.backends.cluster.DaskEngine`)."""

    def extract_split(self, backend: Backend, dataset: Dataset, split: str, directory: Path,
                      todo: Sequence[str], *, local: bool, global_: bool, num_workers: int,
                      half_precision: bool, max_pixels: Optional[int], shard_size: int) -> int:
        """Extract ``todo`` (ids of ``split``) into the store ``directory``; returns the number of
        images that failed (recorded in the store)."""


def stable_seed(seed: int, image_id: str) -> list:
    """Random-generator seed for one image: depends on the seed and the id only."""
    digest = hashlib.sha256(image_id.encode("utf-8", "surrogatepass")).digest()
    return [int(seed), int.from_bytes(digest[:8], "little")]


def usable_global(descriptor: Optional[np.ndarray]) -> bool:
    """A global descriptor that can be searched: finite with a non-zero norm."""
    if descriptor is None:
        return False
    d = np.asarray(descriptor, np.float32)
    return bool(d.size) and bool(np.all(np.isfinite(d))) and float(np.abs(d).max()) > 0.0


NO_GLOBAL = "no usable global descriptor (blank or featureless image)"


def to_original(feats: Features, decoded: DecodedImage) -> Features:
    """Express features found on a reduced decode in the original image's pixels."""
    factors = decoded.factors
    if factors != (1.0, 1.0):
        feats.keypoints = scale_keypoints_back(feats.keypoints, factors)
        feats.scales = (feats.scales / np.float32(factors[0])).astype(np.float32)
    feats.image_size = decoded.original_size
    return feats


def extract_split(backend: Backend, dataset: Dataset, split: str, directory: Path,
                  num_workers: int = 2, shard_size: int = 500, half_precision: bool = False,
                  ids: Optional[Sequence[str]] = None, local: bool = True,
                  global_: bool = True, max_pixels: Optional[int] = None,
                  engine: Optional[Engine] = None) -> FeatureStore:
    """Extract features of the images of one split that are not in ``directory`` yet.

    Args:
        local / global_: which features to compute and store (global descriptors that a
            backend builds later from local ones, as VLAD, are not expected here).
        max_pixels: larger images are decoded at reduced size (keypoints are still stored in
            original-image pixels).
        engine: extract on a cluster's workers instead of in this process (same store).

    An image that cannot be decoded, makes the backend fail or gives no usable global
    descriptor is recorded as a failure (listed in failures.csv, never retried); one decoded
    with errors (truncated) is used and recorded as a note.
    """
    ids = dataset.ids(split) if ids is None else list(ids)
    if split == "train":
        on_disk = dataset.train_on_disk()
        missing = [i for i in ids if i not in on_disk]
        if missing:
            logger.warning("%d of %d train images listed in train.csv are not under %s (e.g. %s); they are "
                           "left out of the index (listed in missing.csv in the work directory)",
                           len(missing), len(ids), dataset.root / "train", dataset.path("train", missing[0]))
            write_missing(directory.parent.parent, split, missing)
            ids = [i for i in ids if i in on_disk]
    done = FeatureStore(directory, repair=True).done_ids(local=local,
                                                          global_=global_ and backend.aggregator is None)
    todo = [i for i in ids if i not in done]
    logger.info("%s: %d images, %d already extracted, %d to do", split, len(ids), len(ids) - len(todo), len(todo))
    failures = 0
    if todo and engine is not None:
        failures = engine.extract_split(backend, dataset, split, directory, todo, local=local, global_=global_,
                                        num_workers=num_workers, half_precision=half_precision,
                                        max_pixels=max_pixels, shard_size=shard_size)
    elif todo:
        items = ((i, dataset.path(split, i)) for i in todo)
        # HDF5 writes run in a background thread, off the model's critical path
        shards = ShardWriter(directory, shard_size=shard_size, half_precision=half_precision)
        with BackgroundWriter(shards) as writer:
            for image_id, decoded, error in progress(
                iter_images(items, num_workers=num_workers, max_pixels=max_pixels), total=len(todo),
                desc=f"extract {split}", unit="img"
            ):
                if decoded is None:
                    logger.warning("Skipping %s image %s: %s", split, image_id, error)
                    writer.add_failure(image_id, error or "unreadable")
                    failures += 1
                    continue
                try:
                    feats = to_original(backend.extract(decoded.array, local=local, global_=global_), decoded)
                except Exception as exc:  # a bad image never stops a run
                    msg = f"{type(exc).__name__}: {exc}"
                    logger.warning("Feature extraction failed for %s image %s (%s): %s",
                                   split, image_id, dataset.path(split, image_id), msg)
                    writer.add_failure(image_id, msg)
                    failures += 1
                    continue
                if not global_:
                    feats.global_descriptor = None
                elif backend.aggregator is None and not usable_global(feats.global_descriptor):
                    logger.warning("%s image %s (%s): %s", split, image_id, dataset.path(split, image_id), NO_GLOBAL)
                    writer.add_failure(image_id, NO_GLOBAL)
                    failures += 1
                    continue
                if decoded.warning:
                    logger.warning("%s image %s (%s) %s: using what could be read", split, image_id,
                                   dataset.path(split, image_id), decoded.warning)
                    writer.add_note(image_id, decoded.warning)
                writer.add(image_id, feats, write_local=local)
    if failures:
        logger.warning("%s: %d image(s) failed; see failures.csv in the work directory", split, failures)
    return FeatureStore(directory)


def codebook_sample(store: FeatureStore, max_training: Optional[int], seed: int,
                    split: str = "train") -> np.ndarray:
    """The database's (``split``: train, or index) descriptors to fit a codebook on, (M, D)
    float32 (binary ones: (M, B) uint8 packed bits, as stored: 32 bytes per ORB descriptor), read
    in bounded memory.

    Each image contributes at most ``ceil(2 * max_training / images)`` descriptors drawn with a
    generator seeded by ``(seed, image id)``; images are visited in sorted id order. The sample
    depends only on the set of train images and the seed (not on shards or interruptions).
    """
    ids = sorted(store.local_ids)
    quota = -(-2 * max_training // max(1, len(ids))) if max_training else None
    chunks = []
    for image_id, d in progress(store.iter_local_descriptors(ids), total=len(ids),
                                desc=f"read {split} descriptors", unit="img"):
        if quota is not None and len(d) > quota:
            rng = np.random.default_rng(stable_seed(seed, image_id))
            d = d[np.sort(rng.choice(len(d), quota, replace=False))]
        if len(d):
            chunks.append(d)
    if not chunks:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(chunks)


def aggregate_globals(backend: Backend, work: Path, stores: Dict[str, FeatureStore],
                       shard_size: int, db_split: str = "train") -> None:
    """Fit the codebook on the database's descriptors (train, or index for the retrieval task;
    once), then encode every image lacking a global descriptor."""
    agg = backend.aggregator
    assert agg is not None
    cb_path = codebook_path(work, db_split)
    codebook = read_array(cb_path, "codebook")
    if codebook is None:
        train = stores[db_split]
        if not train.local_ids:
            raise ValueError(f"No {db_split} image has local features in {train.directory} (all "
                             f"{len(train.failures)} failed?): see failures.csv; cannot fit the codebook")
        descriptors = codebook_sample(train, getattr(agg, "max_training", None), getattr(agg, "seed", 0), db_split)
        if not len(descriptors):
            raise ValueError(f"No {db_split} image gave local descriptors (blank images?): cannot fit the codebook")
        logger.info("Fitting a %d-word codebook on %d %s descriptors", agg.num_words, len(descriptors), db_split)
        codebook = agg.fit(descriptors)
        if getattr(agg, "needs_documents", False):  # BoW's idf: document frequencies over every train image
            ids = sorted(train.local_ids)
            documents = progress(train.iter_local_descriptors(ids), total=len(ids),
                                 desc=f"{backend.name} {db_split} statistics", unit="img")
            codebook = agg.fit_documents(codebook, (desc for _, desc in documents))
        write_array(cb_path, "codebook", codebook)
    for split, store in stores.items():
        have = set(store.global_ids) | set(store.failures)
        missing = sorted(i for i in store.local_ids if i not in have)
        if not missing:
            continue
        with ShardWriter(store.directory, shard_size=max(shard_size, 1000), prefix="vlad") as writer:
            for image_id, desc in progress(store.iter_local_descriptors(missing), total=len(missing),
                                           desc=f"{backend.name} global {split}", unit="img"):
                vector = agg.encode(desc, codebook)
                if usable_global(vector):
                    writer.add_global(image_id, vector)
                else:
                    logger.warning("%s image %s: %s", split, image_id, NO_GLOBAL)
                    writer.add_failure(image_id, NO_GLOBAL)
        store.close()
        stores[split] = FeatureStore(store.directory)


def write_missing(work: Union[str, Path], split: str, ids: Sequence[str]) -> Path:
    """Write ``WORK/missing.csv`` (split,id): listed images that have no file."""
    return write_csv_atomic(missing_path(work), ["split", "id"], ((split, i) for i in ids))
