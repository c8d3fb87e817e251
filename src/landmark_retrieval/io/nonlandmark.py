"""The non-landmark reference store ``WORK/features/nonlandmark`` (``predict.nonlandmark_dir``).

The extract step describes every image below ``predict.nonlandmark_dir`` with the run's own
backend into this store (:func:`landmark_retrieval.extract.extract_nonlandmark`); the predict
step only reads it (:func:`load_nonlandmark_globals`). The store is current while its stamp
equals :func:`nonlandmark_settings`: the test features' settings, the codebook of aggregating
backends and the folder's image list.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np

from .dataset import nonlandmark_images
from .layout import codebook_path, feature_dir, fingerprint, nonlandmark_feature_dir, read_stamp
from .store import FeatureStore, read_array


def nonlandmark_settings(work: Union[str, Path], db_split: str, ids: Sequence[str]) -> dict:
    """What the store is computed from (its stamp): the test features' settings (the same
    backend), the codebook of aggregating backends, and the image list."""
    codebook = read_array(codebook_path(work, db_split), "codebook")
    codebook_hash = hashlib.sha1(np.ascontiguousarray(codebook).tobytes()).hexdigest() if codebook is not None else None
    return {
        "kind": "nonlandmark",
        "features": fingerprint(read_stamp(feature_dir(work, "test")) or {}),
        "codebook": codebook_hash,
        "images": fingerprint({"ids": list(ids)}),
    }


def load_nonlandmark_globals(folder: Union[str, Path], work: Union[str, Path],
                             db_split: str = "train") -> Tuple[List[str], np.ndarray]:
    """Global descriptors of the images of ``folder`` from the run's non-landmark store.

    Returns:
        ids and descriptors (M, G) float32 unit rows (M = 0 when no image could be described).

    Raises:
        ValueError: the store is missing, incomplete or out of date (the message says to run the
            extract step).
    """
    directory = nonlandmark_feature_dir(work)
    ids = list(nonlandmark_images(folder))
    if not directory.is_dir() or read_stamp(directory) != nonlandmark_settings(work, db_split, ids):
        raise ValueError(f"The non-landmark images of {folder} (predict.nonlandmark_dir) are not described in "
                         f"{directory}, or were described with other features: run `landmark-retrieval extract` "
                         "(or `run`) with this setting first")
    with FeatureStore(directory) as store:
        done = set(store.global_ids) | set(store.failures)
        if any(i not in done for i in ids):
            raise ValueError(f"{directory} lacks some of the non-landmark images of {folder}: run "
                             "`landmark-retrieval extract` (or `run`) to finish it")
        out_ids, descriptors = store.globals(ids)
    return out_ids, descriptors.astype(np.float32, copy=False)
