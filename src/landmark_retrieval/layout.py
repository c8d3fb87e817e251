"""The work directory: where every artifact of a run lives (the only module that knows).

::

    WORK/config.json                  the run's configuration (steps continue with it)
    WORK/features/{train,test}/       feature stores (see landmark_retrieval.store)
    WORK/features/train/codebook.h5   codebook of aggregating backends (VLAD), fitted on train
    WORK/retrieval.h5                 k nearest train images per test image
    WORK/verification.csv             inliers of the re-ranked candidates (+ .json fingerprint)
    WORK/predictions.csv              one landmark and confidence per test image
    WORK/failures.csv                 images without features, or decoded with errors
    WORK/missing.csv                  train.csv ids without an image file
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

PathLike = Union[str, Path]

SPLITS = ("train", "test")


def feature_dir(work: PathLike, split: str) -> Path:
    """Feature store of one split."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}")
    return Path(work) / "features" / split


def codebook_path(work: PathLike) -> Path:
    """The codebook lives with the train features (re-extracting them drops it)."""
    return feature_dir(work, "train") / "codebook.h5"


def config_path(work: PathLike) -> Path:
    return Path(work) / "config.json"


def retrieval_path(work: PathLike) -> Path:
    return Path(work) / "retrieval.h5"


def verification_path(work: PathLike) -> Path:
    return Path(work) / "verification.csv"


def verification_fingerprint_path(work: PathLike) -> Path:
    return Path(work) / "verification.json"


def predictions_path(work: PathLike) -> Path:
    return Path(work) / "predictions.csv"


def failures_path(work: PathLike) -> Path:
    return Path(work) / "failures.csv"


def missing_path(work: PathLike) -> Path:
    return Path(work) / "missing.csv"
