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
from typing import Any, Optional

import numpy as np

from ..features import Features

__all__ = ["Backend", "Features", "GlobalAggregator"]


class GlobalAggregator(abc.ABC):
    """Builds a global descriptor from local descriptors with a codebook fitted on train images."""

    @abc.abstractmethod
    def fit(self, descriptors: np.ndarray) -> np.ndarray:
        """Fit a codebook on local descriptors (M, D) float32; returns the codebook array."""

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
        :data:`landmark_retrieval.backends.BACKENDS`), as JSON values.
        """
        out: dict = {"name": self.name}
        if self.conf is not None:
            from . import BACKENDS

            out["max_image_size"] = self.conf.max_image_size
            info = BACKENDS.get(self.name)
            for section in info.sections if info else ():
                out[section] = dataclasses.asdict(getattr(self.conf, section))
        return json.loads(json.dumps(out))  # tuples as lists: equal to what meta.json reads back
