"""Step 1: extract local and global features of every train and test image.

Output: ``WORK/features/{train,test}/`` feature stores (see :mod:`landmark_retrieval.store`),
``WORK/features/train/codebook.h5`` for backends that aggregate local descriptors (VLAD), and
``WORK/failures.csv`` listing images that could not be processed.

Every image is decoded once (in background threads) and run through the backend once. Images
already in the store are skipped, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import csv
import logging
import pprint
import shutil
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
from tqdm.auto import tqdm

from .backends import Backend, make_backend
from .config import Config
from .dataset import Dataset, load_dataset
from .images import iter_images
from .store import FeatureStore, ShardWriter, read_array, read_meta, write_array, write_meta

logger = logging.getLogger("landmark_retrieval")

SPLITS = ("train", "test")


def feature_dir(work: Union[str, Path], split: str) -> Path:
    return Path(work) / "features" / split


def codebook_path(work: Union[str, Path]) -> Path:
    """The VLAD codebook lives with the train features (re-extracting them drops it)."""
    return feature_dir(work, "train") / "codebook.h5"


def _check_meta(directory: Path, meta: dict, overwrite: bool) -> None:
    old = read_meta(directory)
    if old is not None and old != meta:
        if overwrite:
            logger.info("Settings changed: deleting the features in %s", directory)
            shutil.rmtree(directory)
        else:
            raise RuntimeError(
                f"The features in {directory} were extracted with other settings:\n"
                f"  stored:  {old}\n  current: {meta}\n"
                "Use another --work directory, or pass overwrite=True (CLI --overwrite) to re-extract."
            )
    write_meta(directory, meta)


def extract_split(backend: Backend, dataset: Dataset, split: str, directory: Path,
                  num_workers: int = 2, shard_size: int = 500, half_precision: bool = False,
                  ids: Optional[Sequence[str]] = None, local: bool = True,
                  global_: bool = True) -> FeatureStore:
    """Extract features of the images of one split that are not in ``directory`` yet.

    Args:
        local / global_: which features to compute and store (global descriptors that a
            backend builds later from local ones, as VLAD, are not expected here).
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
    done = FeatureStore(directory).done_ids(local=local, global_=global_ and backend.aggregator is None)
    todo = [i for i in ids if i not in done]
    logger.info("%s: %d images, %d already extracted, %d to do", split, len(ids), len(ids) - len(todo), len(todo))
    failures = 0
    if todo:
        items = ((i, dataset.path(split, i)) for i in todo)
        with ShardWriter(directory, shard_size=shard_size, half_precision=half_precision) as writer:
            for image_id, image, error in tqdm(
                iter_images(items, num_workers=num_workers), total=len(todo), desc=f"extract {split}", unit="img"
            ):
                if image is None:
                    logger.warning("Skipping %s image %s: %s", split, image_id, error)
                    writer.add_failure(image_id, error or "unreadable")
                    failures += 1
                    continue
                try:
                    feats = backend.extract(image, local=local, global_=global_)
                except Exception as exc:  # a bad image never stops a run
                    msg = f"{type(exc).__name__}: {exc}"
                    logger.warning("Feature extraction failed for %s image %s (%s): %s",
                                   split, image_id, dataset.path(split, image_id), msg)
                    writer.add_failure(image_id, msg)
                    failures += 1
                    continue
                if not global_:
                    feats.global_descriptor = None
                writer.add(image_id, feats, write_local=local)
    if failures:
        logger.warning("%s: %d image(s) failed; see failures.csv in the work directory", split, failures)
    return FeatureStore(directory)


def _aggregate_globals(backend: Backend, work: Path, stores: Dict[str, FeatureStore],
                       shard_size: int) -> None:
    """Fit the codebook on train descriptors (once), then encode every image lacking a global."""
    agg = backend.aggregator
    assert agg is not None
    cb_path = codebook_path(work)
    codebook = read_array(cb_path, "codebook")
    if codebook is None:
        train = stores["train"]
        # Sample while reading: the fit keeps at most `max_training` descriptors, so reading every
        # train descriptor first would need ~0.5 MB per image (tens of GB at GLR scale).
        cap = getattr(agg, "max_training", None)
        quota = -(-2 * cap // max(1, len(train.local_ids))) if cap else None
        rng = np.random.default_rng(getattr(agg, "seed", 0))
        chunks = []
        for _, d in tqdm(train.iter_local_descriptors(), total=len(train.local_ids),
                         desc="read train descriptors", unit="img"):
            if quota is not None and len(d) > quota:
                d = d[np.sort(rng.choice(len(d), quota, replace=False))]
            if len(d):
                chunks.append(d)
        if not chunks:
            raise ValueError("No train image gave local descriptors: cannot fit the codebook")
        descriptors = np.concatenate(chunks)
        logger.info("Fitting a %d-word codebook on %d train descriptors", agg.num_words, len(descriptors))
        codebook = agg.fit(descriptors)
        write_array(cb_path, "codebook", codebook)
    for split, store in stores.items():
        have = set(store.global_ids)
        missing = [i for i in store.local_ids if i not in have]
        if not missing:
            continue
        with ShardWriter(store.directory, shard_size=max(shard_size, 1000), prefix="vlad") as writer:
            for image_id, desc in tqdm(store.iter_local_descriptors(missing), total=len(missing),
                                       desc=f"VLAD {split}", unit="img"):
                writer.add_global(image_id, agg.encode(desc, codebook))
        store.close()
        stores[split] = FeatureStore(store.directory)


def write_missing(work: Union[str, Path], split: str, ids: Sequence[str]) -> Path:
    """Write ``WORK/missing.csv`` (split,id): listed images that have no file."""
    path = Path(work) / "missing.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "id"])
        w.writerows((split, i) for i in ids)
    return path


def write_failures(work: Union[str, Path], stores: Dict[str, FeatureStore], dataset: Dataset) -> Path:
    """Write ``WORK/failures.csv`` (split,id,path,error) for every image without features."""
    path = Path(work) / "failures.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "id", "path", "error"])
        for split, store in stores.items():
            for image_id, error in sorted(store.failures.items()):
                w.writerow([split, image_id, dataset.path(split, image_id), error])
    return path


def extract(conf: Config, data: Union[str, Path, Dataset], work: Union[str, Path],
            splits: Sequence[str] = SPLITS, overwrite: bool = False,
            backend: Optional[Backend] = None) -> Dict[str, Path]:
    """Extract features for a GLR dataset.

    Args:
        conf: pipeline configuration (``conf.extract`` is used).
        data: dataset root (or a loaded :class:`Dataset`).
        work: work directory; features go to ``work/features/<split>``.
        splits: which splits to process.
        overwrite: delete stored features made with other settings instead of raising.
        backend: an already-built backend (e.g. a loaded DELG model) to reuse.

    Returns:
        ``{split: store directory}``.
    """
    work = Path(work)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    backend = backend or make_backend(conf.extract)
    meta = backend.describe()
    logger.info("Extracting features with:\n%s", pprint.pformat(meta))
    stores: Dict[str, FeatureStore] = {}
    train_global_only = train_local_deferred(conf, backend)
    for split in splits:
        directory = feature_dir(work, split)
        _check_meta(directory, meta, overwrite)
        stores[split] = extract_split(
            backend, dataset, split, directory, num_workers=conf.extract.num_workers,
            shard_size=conf.extract.shard_size, half_precision=conf.extract.half_precision,
            local=not (split == "train" and train_global_only),
        )
    if backend.aggregator is not None:
        if "train" not in stores:
            stores["train"] = FeatureStore(feature_dir(work, "train"))
        _aggregate_globals(backend, work, stores, conf.extract.shard_size)
    write_failures(work, stores, dataset)
    for store in stores.values():
        store.close()
    return {split: feature_dir(work, split) for split in stores}


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
                       backend: Optional[Backend] = None) -> Path:
    """Extract local features of the train images that some test image re-ranks.

    Used with ``extract.train_local = "candidates"``, after the retrieve step: the candidates
    are the ``verify.num_to_rerank`` nearest train images of every test image (each extracted
    once, however many test images retrieve it). Resumable like :func:`extract`.

    Returns:
        The train feature store directory.
    """
    from .retrieve import load_retrieval, retrieval_path

    work = Path(work)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    retrieval = load_retrieval(retrieval_path(work))
    n = conf.verify.num_to_rerank
    rows = np.unique(retrieval.indices[:, :n]) if retrieval.indices.size else np.zeros(0, np.int64)
    candidates = [retrieval.db_ids[j] for j in rows]
    logger.info("%d distinct train images are re-ranking candidates of %d test images",
                len(candidates), len(retrieval.query_ids))
    backend = backend or make_backend(conf.extract)
    directory = feature_dir(work, "train")
    _check_meta(directory, backend.describe(), overwrite=False)
    store = extract_split(backend, dataset, "train", directory, num_workers=conf.extract.num_workers,
                          shard_size=conf.extract.shard_size, half_precision=conf.extract.half_precision,
                          ids=candidates, local=True, global_=False)
    write_failures(work, {"train": store, "test": FeatureStore(feature_dir(work, "test"))}, dataset)
    store.close()
    return directory
