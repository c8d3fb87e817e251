"""Step 1: extract local and global features of every train and test image.

Output: ``WORK/features/{train,test}/`` feature stores (see :mod:`landmark_retrieval.store`),
``WORK/features/train/codebook.h5`` for backends that aggregate local descriptors (VLAD), and
``WORK/failures.csv`` listing images that could not be processed (and those decoded with errors).

Every image is decoded once (in background threads, at most ``extract.max_pixels`` pixels) and
run through the backend once. Images already in the store are skipped, so an interrupted run
resumes where it stopped. Results depend only on the set of images and the settings, never on
interruptions, shard size or read order: the codebook's training sample is drawn per image from
``(seed, image id)`` and assembled in id order.

``shard=(i, n)`` extracts the deterministic i-th of n parts of every split (see
:mod:`landmark_retrieval.shards`; no codebook is fitted on a part: ``merge``, then ``run``, fits
it on all of them), and with ``run.cluster`` the images are extracted on the workers of a Dask
cluster (see :mod:`landmark_retrieval.cluster`); the stores are the same either way.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .backends import Backend, make_backend
from .cluster import DaskEngine, cluster_engine
from .config import Config
from .dataset import Dataset, load_dataset
from .features import Features
from .images import DecodedImage, iter_images, scale_keypoints_back
from .layout import (
    ALL_SPLITS,
    SPLITS,
    codebook_path,
    failures_path,
    feature_dir,
    load_retrieval,
    missing_path,
    retrieval_path,
    stamp_changes,
)
from .progress import progress
from .shards import shard_ids, write_shard_record
from .store import (
    BackgroundWriter,
    FeatureStore,
    ShardWriter,
    read_array,
    write_array,
    write_csv_atomic,
    write_meta,
)

logger = logging.getLogger("landmark_retrieval")

__all__ = ["extract", "extract_candidates", "extract_split", "feature_dir", "codebook_path", "SPLITS"]


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


def _to_original(feats: Features, decoded: DecodedImage) -> Features:
    """Express features found on a reduced decode in the original image's pixels."""
    factors = decoded.factors
    if factors != (1.0, 1.0):
        feats.keypoints = scale_keypoints_back(feats.keypoints, factors)
        feats.scales = (feats.scales / np.float32(factors[0])).astype(np.float32)
    feats.image_size = decoded.original_size
    return feats


def _check_meta(directory: Path, meta: dict, overwrite: bool) -> None:
    changes = stamp_changes(directory, meta)
    if changes:
        if overwrite:
            logger.info("Settings changed (%s): deleting the features in %s", "; ".join(changes), directory)
            shutil.rmtree(directory)
        else:
            raise RuntimeError(
                f"The features in {directory} were extracted with other settings ({'; '.join(changes)}). "
                "Use another --work directory, or pass overwrite=True (CLI --overwrite) to re-extract."
            )
    write_meta(directory, meta)


def extract_split(backend: Backend, dataset: Dataset, split: str, directory: Path,
                  num_workers: int = 2, shard_size: int = 500, half_precision: bool = False,
                  ids: Optional[Sequence[str]] = None, local: bool = True,
                  global_: bool = True, max_pixels: Optional[int] = None,
                  engine: Optional[DaskEngine] = None) -> FeatureStore:
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
                    feats = _to_original(backend.extract(decoded.array, local=local, global_=global_), decoded)
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


def codebook_sample(store: FeatureStore, max_training: Optional[int], seed: int) -> np.ndarray:
    """Train descriptors to fit a codebook on, (M, D) float32 (binary ones: (M, B) uint8 packed
    bits, as stored: 32 bytes per ORB descriptor), read in bounded memory.

    Each image contributes at most ``ceil(2 * max_training / images)`` descriptors drawn with a
    generator seeded by ``(seed, image id)``; images are visited in sorted id order. The sample
    depends only on the set of train images and the seed (not on shards or interruptions).
    """
    ids = sorted(store.local_ids)
    quota = -(-2 * max_training // max(1, len(ids))) if max_training else None
    chunks = []
    for image_id, d in progress(store.iter_local_descriptors(ids), total=len(ids),
                                desc="read train descriptors", unit="img"):
        if quota is not None and len(d) > quota:
            rng = np.random.default_rng(stable_seed(seed, image_id))
            d = d[np.sort(rng.choice(len(d), quota, replace=False))]
        if len(d):
            chunks.append(d)
    if not chunks:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(chunks)


def _aggregate_globals(backend: Backend, work: Path, stores: Dict[str, FeatureStore],
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
            raise ValueError(f"No train image has local features in {train.directory} (all {len(train.failures)} "
                             "failed?): see failures.csv; cannot fit the codebook")
        descriptors = codebook_sample(train, getattr(agg, "max_training", None), getattr(agg, "seed", 0))
        if not len(descriptors):
            raise ValueError("No train image gave local descriptors (blank images?): cannot fit the codebook")
        logger.info("Fitting a %d-word codebook on %d train descriptors", agg.num_words, len(descriptors))
        codebook = agg.fit(descriptors)
        if getattr(agg, "needs_documents", False):  # BoW's idf: document frequencies over every train image
            ids = sorted(train.local_ids)
            documents = progress(train.iter_local_descriptors(ids), total=len(ids),
                                 desc=f"{backend.name} train statistics", unit="img")
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


def write_failures(work: Union[str, Path], dataset: Dataset) -> Path:
    """Write ``WORK/failures.csv`` (split,id,path,error) over every feature store of the run:
    images without features, and images used although they decoded with errors."""
    rows = []
    for split in ALL_SPLITS:
        if not feature_dir(work, split).is_dir():
            continue
        with FeatureStore(feature_dir(work, split)) as store:
            problems = dict(store.notes)
            problems.update(store.failures)
        for image_id, error in sorted(problems.items()):
            rows.append([split, image_id, dataset.path(split, image_id), error])
    return write_csv_atomic(failures_path(work), ["split", "id", "path", "error"], rows)


def dataset_splits(conf: Config, dataset: Dataset) -> Tuple[str, ...]:
    """The splits a run extracts: ``train, test`` (recognition) or ``index, test`` (retrieval),
    plus ``train`` for the retrieval task's label-aware re-ranking or a projection trained on labels."""
    if dataset.task != "retrieval":
        return SPLITS
    from .projection import PROJECTION_METHODS

    method = PROJECTION_METHODS.get(conf.retrieve.projection.method or "")
    if (conf.retrieve.label_aware or (method is not None and method.needs_labels)) and dataset.has_train:
        return ("index", "test", "train")
    return ("index", "test")


def extract(conf: Config, data: Union[str, Path, Dataset], work: Union[str, Path], overwrite: bool = False,
            *, splits: Optional[Sequence[str]] = None, backend: Optional[Backend] = None,
            shard: Optional[Tuple[int, int]] = None, aggregate: bool = True,
            engine: Optional[DaskEngine] = None) -> Path:
    """Step 1: extract features for a GLR dataset.

    Args:
        conf: pipeline configuration (``conf.extract`` is used).
        data: dataset root (or a loaded :class:`Dataset`).
        work: work directory; features go to ``work/features/<split>``.
        overwrite: delete stored features made with other settings instead of raising.
        splits: which splits to process (default: :func:`dataset_splits`).
        backend: an already-built backend (e.g. a loaded DELG model) to reuse.
        shard: ``(i, n)``: only the i-th of n deterministic parts of every split (see
            :func:`landmark_retrieval.shards.shard_ids`); no codebook is fitted.
        aggregate: fit the codebook and build the global descriptors of aggregating backends
            (VLAD) once every split is extracted; False leaves it to a later call.
        engine: where images are extracted (default: ``run.cluster``'s Dask cluster when set,
            else this process).

    Returns:
        ``WORK/features`` (one store per split inside).
    """
    work = Path(work)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    engine = engine if engine is not None else cluster_engine(conf)
    backend = backend or (engine.backend(conf.extract) if engine is not None else make_backend(conf.extract))
    meta = {**backend.describe(), "max_pixels": conf.extract.max_pixels}
    logger.info("Extracting features with the %s backend", backend.name)
    stores: Dict[str, FeatureStore] = {}
    db_global_only = train_local_deferred(conf, backend)
    db = dataset.db_split
    for split in splits or dataset_splits(conf, dataset):
        directory = feature_dir(work, split)
        _check_meta(directory, meta, overwrite)
        if split == db:
            local = not db_global_only
        elif split == "train":  # the retrieval task's labelled images: global descriptors only
            local = backend.aggregator is not None
        else:
            local = True
        stores[split] = extract_split(
            backend, dataset, split, directory, num_workers=conf.extract.num_workers,
            shard_size=conf.extract.shard_size, half_precision=conf.extract.half_precision,
            local=local, max_pixels=conf.extract.max_pixels, engine=engine,
            ids=None if shard is None else shard_ids(dataset.ids(split), shard),
        )
    if shard is not None:
        write_shard_record(work, shard)
        if backend.aggregator is not None:
            logger.info("Shard %d/%d: the %s codebook is fitted on every shard's images, after `landmark-retrieval "
                        "merge` (by `run` on the merged work directory)", shard[0], shard[1], backend.name)
    if backend.aggregator is not None and aggregate and shard is None:
        if db not in stores:
            stores[db] = FeatureStore(feature_dir(work, db))
        _aggregate_globals(backend, work, stores, conf.extract.shard_size, db_split=db)
    for store in stores.values():
        store.close()
    write_failures(work, dataset)
    return feature_dir(work, "train").parent


def train_local_deferred(conf: Config, backend: Backend) -> bool:
    """True when train images get local features only once they are re-ranking candidates."""
    if conf.extract.train_local != "candidates":
        return False
    if backend.aggregator is not None:
        logger.info("The %s backend builds global descriptors from local features: extracting local "
                    "features of every train image (extract.train_local=all)", backend.name)
        return False
    return True


def extract_candidates(conf: Config, data: Union[str, Path, Dataset], work: Union[str, Path],
                       overwrite: bool = False, *, backend: Optional[Backend] = None,
                       engine: Optional[DaskEngine] = None) -> Path:
    """Extract local features of the train images that some test image re-ranks.

    Used with ``extract.train_local = "candidates"``, after the retrieve step: the candidates
    are the ``verify.num_to_rerank`` nearest train images of every test image (each extracted
    once, however many test images retrieve it). Resumable like :func:`extract`.

    Returns:
        The train feature store directory.
    """
    work = Path(work)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    retrieval = load_retrieval(retrieval_path(work))
    n = conf.verify.num_to_rerank
    rows = np.unique(retrieval.indices[:, :n]) if retrieval.indices.size else np.zeros(0, np.int64)
    candidates = [retrieval.db_ids[j] for j in rows]
    db = retrieval.db_split
    logger.info("%d distinct %s images are re-ranking candidates of %d test images",
                len(candidates), db, len(retrieval.query_ids))
    engine = engine if engine is not None else cluster_engine(conf)
    backend = backend or (engine.backend(conf.extract) if engine is not None else make_backend(conf.extract))
    directory = feature_dir(work, db)
    _check_meta(directory, {**backend.describe(), "max_pixels": conf.extract.max_pixels}, overwrite=False)
    store = extract_split(backend, dataset, db, directory, num_workers=conf.extract.num_workers,
                          shard_size=conf.extract.shard_size, half_precision=conf.extract.half_precision,
                          ids=candidates, local=True, global_=False, max_pixels=conf.extract.max_pixels,
                          engine=engine)
    store.close()
    write_failures(work, dataset)
    return directory
