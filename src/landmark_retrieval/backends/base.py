"""The feature-extractor interface every backend implements.

A backend turns an RGB uint8 image into :class:`~landmark_retrieval.features.Features` (see that
module for the conventions: keypoints in original-image pixels, unit descriptors). Backends whose
global descriptor is built from local ones after a codebook is fitted on train images (VLAD)
provide a :class:`GlobalAggregator`.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from ..features import Features
from .registry import BACKENDS


def saved_model_file(path: Union[str, "os.PathLike[str]"]) -> Optional[Path]:
    """``saved_model.pb`` (or ``.pbtxt``) of a SavedModel folder, or None when ``path`` is not one."""
    path = Path(path)
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        if (path / name).is_file():
            return path / name
    return None


def file_mentions(path: Union[str, "os.PathLike[str]"], needle: bytes, limit: int = 1 << 28) -> bool:
    """Whether the first ``limit`` bytes of a file contain ``needle`` (read in blocks; False when
    the file cannot be read). Used to recognise a model by the tensor names its graph holds."""
    tail, seen = b"", 0
    try:
        with open(path, "rb") as fh:
            while seen < limit:
                block = fh.read(1 << 22)
                if not block:
                    return False
                if needle in tail + block:
                    return True
                tail, seen = block[-(len(needle) - 1):] if len(needle) > 1 else b"", seen + len(block)
    except OSError:
        return False
    return False


class GlobalAggregator(abc.ABC):
    """Builds a global descriptor from local descriptors with a codebook fitted on train images.

    Implementations: :mod:`landmark_retrieval.backends.aggregators` (VLAD, BoW, Fisher vectors).
    """

    #: True when :meth:`fit_documents` must see every train image's descriptors after :meth:`fit`
    #: (BoW: the idf needs per-image document frequencies)
    needs_documents: bool = False

    @abc.abstractmethod
    def fit(self, descriptors: np.ndarray) -> np.ndarray:
        """Fit a codebook on local descriptors (M, D) float32; returns the codebook array."""

    def fit_documents(self, codebook: np.ndarray, documents: Iterable[np.ndarray]) -> np.ndarray:
        """Complete a fitted codebook with statistics over every train image (``documents``: one
        (N_i, D) descriptor array per image, each once); returns the codebook to store. Only
        called when :attr:`needs_documents`; the default returns ``codebook`` unchanged."""
        return codebook

    @abc.abstractmethod
    def encode(self, descriptors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
        """Encode one image's local descriptors (N, D) into a unit global descriptor (G,)."""


class Backend(abc.ABC):
    """A feature extractor: one call per image gives local and (usually) global features."""

    name: str = "backend"
    local_dim: int = 0
    #: set when global descriptors come from local ones after a codebook is fitted on train images
    aggregator: Optional[GlobalAggregator] = None
    #: the backend's ``ExtractConfig`` (set by the constructor); None for hand-made backends
    conf: Optional[Any] = None

    @abc.abstractmethod
    def extract(self, image: np.ndarray, local: bool = True, global_: bool = True) -> Features:
        """Extract features from an RGB uint8 image (H, W, 3).

        ``local`` / ``global_`` = False skip that head when the backend can (the result then has
        empty local arrays / no global descriptor).
        """

    def describe(self) -> dict:
        """Settings that change the features (stored in the feature store's ``meta.json`` and
        compared there, to detect features made with other settings).

        The backend's name, ``max_image_size`` and every ``extract`` section it reads (see
        :data:`landmark_retrieval.backends.registry.BACKENDS`), as JSON values.
        """
        out: dict = {"name": self.name}
        if self.conf is not None:
            out["max_image_size"] = self.conf.max_image_size
            info = BACKENDS.get(self.name)
            for section in info.sections if info else ():
                out[section] = dataclasses.asdict(getattr(self.conf, section))
        return json.loads(json.dumps(out))  # tuples as lists: equal to what meta.json reads back


def store_meta(backend: "Backend", max_pixels: Optional[int]) -> dict:
    """What a feature store's ``meta.json`` records of the settings its features were made with:
    the backend's :meth:`Backend.describe` and ``extract.max_pixels`` (the decoding cap)."""
    return {**backend.describe(), "max_pixels": max_pixels}


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[..., :3]
    return np.ascontiguousarray(image)


def short_error(exc: BaseException, limit: int = 300) -> str:
    """The informative part of a (possibly multi-line) TensorFlow error message."""
    text = str(getattr(exc, "message", None) or exc)
    skip = ("Graph execution error", "Detected at node", "<stack traces", "File ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    return " ".join(lines)[:limit] or type(exc).__name__
