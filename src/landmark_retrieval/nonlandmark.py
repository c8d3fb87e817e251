"""Global descriptors of a folder of non-landmark images (``predict.nonlandmark_dir``).

The GLR2020 winners lowered the confidence of test images that look more like known
non-landmark images (portraits, food, interiors, documents, ...) than like any train image.
Those reference images must be described by the run's own backend, so this module extracts
their global descriptors into ``WORK/features/nonlandmark`` with the extract step's functions,
once: later runs reuse the store while the test features' settings, the codebook (VLAD) and the
folder's image list are unchanged, and an interrupted extraction resumes. The folder may have
any layout: every image file below it is used (ids are hashes of the relative paths).

The store belongs to this module: one whose stamp differs (another folder, other features) is
deleted and extracted again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
import pandas as pd

from .config import Config
from .dataset import IMAGE_SUFFIXES, Dataset
from .layout import codebook_path, feature_dir, fingerprint, nonlandmark_feature_dir, read_stamp, write_stamp
from .store import FeatureStore, ShardWriter, read_array

logger = logging.getLogger("landmark_retrieval")

__all__ = ["nonlandmark_images", "nonlandmark_globals"]


def nonlandmark_images(folder: Union[str, Path]) -> Dict[str, Path]:
    """Every image file below ``folder`` (directory symlinks not followed), by id.

    Returns:
        ``{id: path}`` sorted by relative path; the id is the first 16 hex digits of the MD5 of
        the relative path (file names may repeat across sub-folders).

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"predict.nonlandmark_dir: {folder} is not a folder of non-landmark images")
    found: List[Tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            if name.endswith(IMAGE_SUFFIXES):
                path = Path(dirpath) / name
                found.append((path.relative_to(folder).as_posix(), path))
    found.sort()
    return {hashlib.md5(rel.encode()).hexdigest()[:16]: path for rel, path in found}


def _settings(work: Path, db_split: str, ids: List[str]) -> dict:
    """What the store is computed from: the test features' settings (the same backend), the
    codebook of aggregating backends, and the image list."""
    codebook = read_array(codebook_path(work, db_split), "codebook")
    codebook_hash = hashlib.sha1(np.ascontiguousarray(codebook).tobytes()).hexdigest() if codebook is not None else None
    return {
        "kind": "nonlandmark",
        "features": fingerprint(read_stamp(feature_dir(work, "test")) or {}),
        "codebook": codebook_hash,
        "images": fingerprint({"ids": ids}),
    }


def nonlandmark_globals(conf: Config, work: Union[str, Path], db_split: str = "train",
                        backend=None) -> Tuple[List[str], np.ndarray]:
    """Global descriptors of the images of ``conf.predict.nonlandmark_dir``, extracting them
    into ``WORK/features/nonlandmark`` when needed (see the module docstring).

    Args:
        conf: the run's configuration (``extract`` builds the backend, as in the extract step).
        work: the run's work directory (its test features must exist).
        db_split: where the run's codebook is (VLAD backends).
        backend: an already-built backend to reuse.

    Returns:
        ids and descriptors (M, G) float32 unit rows (M = 0 when no image could be described).
    """
    from .extract import extract_split, usable_global  # the extract step's own functions

    work = Path(work)
    directory = nonlandmark_feature_dir(work)
    folder = conf.predict.nonlandmark_dir
    if folder is None:
        raise ValueError("predict.nonlandmark_dir is not set")
    images = nonlandmark_images(folder)
    ids = list(images)
    settings = _settings(work, db_split, ids)
    if directory.exists() and read_stamp(directory) != settings:
        logger.info("Non-landmark images or features changed: extracting %s again", folder)
        shutil.rmtree(directory)
    with FeatureStore(directory) as store:
        done = set(store.global_ids) | set(store.failures)
    if any(i not in done for i in ids):
        from .backends import make_backend

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
        out_ids, descriptors = store.globals(ids)
    if not out_ids:
        logger.warning("No non-landmark image of %s could be described: predict.nonlandmark_dir has no effect", folder)
    return out_ids, descriptors.astype(np.float32, copy=False)
