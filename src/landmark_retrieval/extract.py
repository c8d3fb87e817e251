"""Step 1: extract local and global features of every train and test image.

Output: ``WORK/features/{train,test}/`` feature stores (see :mod:`landmark_retrieval.io.store`),
``WORK/features/train/codebook.h5`` for backends that aggregate local descriptors (VLAD), and
``WORK/failures.csv`` listing images that could not be processed (and those decoded with errors).

Every image is decoded once (in background threads, at most ``extract.max_pixels`` pixels) and
run through the backend once. Images already in the store are skipped, so an interrupted run
resumes where it stopped. Results depend only on the set of images and the settings, never on
interruptions, shard size or read order: the codebook's training sample is drawn per image from
``(seed, image id)`` and assembled in id order.

``shard=(i, n)`` extracts the deterministic i-th of n parts of every split (see
:mod:`landmark_retrieval.io.shards`; no codebook is fitted on a part: ``merge``, then ``run``, fits
it on all of them), and with ``run.cluster`` the images are extracted on the workers of a Dask
cluster (see :mod:`landmark_retrieval.backends.cluster`); the stores are the same either way.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from .backends.base import Backend, store_meta
from .backends.cluster import DaskEngine, cluster_engine
from .backends.extraction import aggregate_globals, extract_split, usable_global
from .backends.registry import make_backend
from .config import Config
from .io.atomic import write_csv_atomic
from .io.dataset import Dataset, load_dataset, nonlandmark_images
from .io.layout import (
    ALL_SPLITS,
    SPLITS,
    codebook_path,
    failures_path,
    feature_dir,
    load_retrieval,
    nonlandmark_feature_dir,
    read_stamp,
    retrieval_path,
    stamp_changes,
    write_stamp,
)
from .io.nonlandmark import nonlandmark_settings
from .io.shards import shard_ids, write_shard_record
from .io.store import FeatureStore, read_array, write_meta
from .io.writer import ShardWriter
from .search.projection import PROJECTION_METHODS

logger = logging.getLogger("landmark_retrieval")


def _features_differ(directory: Path, changes: Sequence[str]) -> RuntimeError:
    return RuntimeError(f"The features in {directory} were extracted with other settings ({'; '.join(changes)}). "
                        "Use another --work directory, or pass overwrite=True (CLI --overwrite) to re-extract.")


def _check_meta(directory: Path, meta: dict, overwrite: bool) -> None:
    changes = stamp_changes(directory, meta)
    if changes:
        if not overwrite:
            raise _features_differ(directory, changes)
        logger.info("Settings changed (%s): deleting the features in %s", "; ".join(changes), directory)
        shutil.rmtree(directory)
    write_meta(directory, meta)


def check_features(conf: Config, data: Union[str, Path, Dataset], work: Union[str, Path], overwrite: bool = False,
                   backend: Optional[Backend] = None, engine: Optional[DaskEngine] = None) -> Backend:
    """Raise before anything is written when ``work``'s stored features were extracted with other
    settings than ``conf`` and ``overwrite`` is false; returns the backend built for the check.

    Raises:
        RuntimeError: naming the store, the settings that differ and the fix.
    """
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    if backend is None:
        engine = engine if engine is not None else cluster_engine(conf)
        backend = engine.backend(conf.extract) if engine is not None else make_backend(conf.extract)
    if not overwrite:
        meta = store_meta(backend, conf.extract.max_pixels)
        for split in dataset_splits(conf, dataset):
            changes = stamp_changes(feature_dir(work, split), meta)
            if changes:
                raise _features_differ(feature_dir(work, split), changes)
    return backend


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
            :func:`landmark_retrieval.io.shards.shard_ids`); no codebook is fitted.
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
    meta = store_meta(backend, conf.extract.max_pixels)
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
        aggregate_globals(backend, work, stores, conf.extract.shard_size, db_split=db)
    for store in stores.values():
        store.close()
    if conf.predict.nonlandmark_dir and aggregate and shard is None and "test" in stores:
        extract_nonlandmark(conf, work, db, backend)
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
    _check_meta(directory, store_meta(backend, conf.extract.max_pixels), overwrite=False)
    store = extract_split(backend, dataset, db, directory, num_workers=conf.extract.num_workers,
                          shard_size=conf.extract.shard_size, half_precision=conf.extract.half_precision,
                          ids=candidates, local=True, global_=False, max_pixels=conf.extract.max_pixels,
                          engine=engine)
    store.close()
    write_failures(work, dataset)
    return directory


def extract_nonlandmark(conf: Config, work: Union[str, Path], db_split: str = "train",
                        backend: Optional[Backend] = None) -> Path:
    """Describe the images of ``conf.predict.nonlandmark_dir`` with the run's backend into
    ``WORK/features/nonlandmark`` (what the predict step's non-landmark rule (c) compares with).

    The GLR2020 winners lowered the confidence of test images that look more like known
    non-landmark images (portraits, food, interiors, documents, ...) than like any train image;
    the reference images must be described by the run's own backend. The folder may have any
    layout (every image file below it; ids are hashes of the relative paths). The store is
    extracted once and kept while its stamp (:func:`landmark_retrieval.io.nonlandmark.nonlandmark_settings`)
    holds; another folder or other features delete it and extract again; an interrupted
    extraction resumes.

    Args:
        conf: the run's configuration (``extract`` builds the backend).
        work: the run's work directory (its test features, and the codebook of aggregating
            backends, must exist).
        db_split: where the run's codebook is (VLAD backends).
        backend: an already-built backend to reuse.

    Returns:
        The store's directory.
    """
    work = Path(work)
    directory = nonlandmark_feature_dir(work)
    folder = conf.predict.nonlandmark_dir
    if folder is None:
        raise ValueError("predict.nonlandmark_dir is not set")
    images = nonlandmark_images(folder)
    ids = list(images)
    settings = nonlandmark_settings(work, db_split, ids)
    if directory.exists() and read_stamp(directory) != settings:
        logger.info("Non-landmark images or features changed: extracting %s again", folder)
        shutil.rmtree(directory)
    with FeatureStore(directory) as store:
        done = set(store.global_ids) | set(store.failures)
    if any(i not in done for i in ids):
        backend = backend or make_backend(conf.extract)
        aggregating = backend.aggregator is not None
        write_stamp(directory, settings)
        dataset = Dataset(root=Path(folder), train=pd.DataFrame({"id": [], "landmark_id": []}), test_ids=ids,
                          _test_paths=images)
        logger.info("Extracting global descriptors of %d non-landmark images from %s", len(ids), folder)
        store = extract_split(backend, dataset, "test", directory, num_workers=conf.extract.num_workers,
                              shard_size=conf.extract.shard_size, local=aggregating, global_=not aggregating,
                              max_pixels=conf.extract.max_pixels)
        if aggregating:  # VLAD: encode with the run's codebook
            codebook = read_array(codebook_path(work, db_split), "codebook")
            if codebook is None:
                raise RuntimeError(f"No codebook in {codebook_path(work, db_split)}: run the extract step first")
            have = set(store.global_ids) | set(store.failures)
            todo = [i for i in store.local_ids if i not in have]
            with ShardWriter(directory, shard_size=max(conf.extract.shard_size, 1000), prefix="vlad") as writer:
                for image_id, desc in store.iter_local_descriptors(todo):
                    vector = backend.aggregator.encode(desc, codebook)
                    if usable_global(vector):
                        writer.add_global(image_id, vector)
                    else:
                        writer.add_failure(image_id, "no usable global descriptor")
        store.close()
    with FeatureStore(directory) as store:
        if not store.global_ids:
            logger.warning("No non-landmark image of %s could be described: predict.nonlandmark_dir has no effect",
                           folder)
    return directory
