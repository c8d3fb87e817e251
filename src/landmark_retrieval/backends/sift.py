"""Classical backend: RootSIFT local features and a VLAD global descriptor. No weights needed.

RootSIFT (Arandjelovic & Zisserman 2012): SIFT descriptors L1-normalised, then square-rooted,
so that Euclidean distance between them is the Hellinger kernel; rows come out L2-unit.
VLAD: residuals of the descriptors to their nearest k-means word, summed per word,
intra-normalised per word (optional), signed power-law normalised, L2-normalised.
The codebook is fitted on train images only (OpenCV k-means, seeded by ``extract.vlad.seed``)
and stored with the features. ``extract.global_descriptor`` selects another global descriptor
(BoW, Fisher vector, colour histogram: :mod:`landmark_retrieval.backends.aggregators`).
"""
from __future__ import annotations

import logging
from typing import Optional

import cv2
import numpy as np

from ..config import ExtractConfig
from ..features import Features
from ..io.images import resize_max_side, scale_keypoints_back
from .aggregators import describe_global, make_global
from .base import Backend

logger = logging.getLogger("landmark_retrieval")


def root_sift(descriptors: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """RootSIFT from SIFT descriptors (N, 128) -> (N, 128) float32 with unit L2 rows."""
    d = np.asarray(descriptors, np.float32)
    if d.size == 0:
        return np.zeros((0, d.shape[1] if d.ndim == 2 else 128), np.float32)
    d = d / (np.abs(d).sum(axis=1, keepdims=True) + eps)
    d = np.sqrt(np.maximum(d, 0.0))
    return (d / (np.linalg.norm(d, axis=1, keepdims=True) + eps)).astype(np.float32)


class SiftBackend(Backend):
    """RootSIFT keypoints/descriptors (OpenCV SIFT) + a global descriptor (VLAD by default).

    Reads ``extract.sift`` and the section of ``extract.global_descriptor`` (see
    :data:`landmark_retrieval.backends.registry.BACKENDS`); :meth:`describe` stores both with the features.
    """

    name = "sift"
    local_dim = 128

    def __init__(self, conf: Optional[ExtractConfig] = None):
        self.conf = conf or ExtractConfig(backend="sift")
        sift = self.conf.sift
        self._sift = cv2.SIFT_create(
            nfeatures=int(sift.max_keypoints),
            contrastThreshold=float(sift.contrast_threshold),
        )
        # VLAD, BoW, Fisher: an aggregator of the local descriptors; colour: an image function
        self.aggregator, self._image_global = make_global(self.conf)

    def describe(self) -> dict:
        """:meth:`Backend.describe` with the selected global descriptor's section only."""
        return describe_global(super().describe(), self.conf)

    def extract(self, image: np.ndarray, local: bool = True, global_: bool = True) -> Features:
        """RootSIFT features of an RGB uint8 image (H, W, 3). The global descriptor is computed
        here only when it comes from the image (colour); VLAD/BoW/Fisher need the codebook, so
        then the local features are always computed and there is no global descriptor."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        small, factors = resize_max_side(image, self.conf.max_image_size)
        glob = self._image_global(small) if self._image_global is not None and global_ else None
        if self._image_global is not None and not local:
            return Features.empty(self.local_dim, (w, h), global_descriptor=glob)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        kps, desc = self._sift.detectAndCompute(gray, None)
        if desc is None or not kps:
            return Features.empty(self.local_dim, (w, h), global_descriptor=glob)
        # OpenCV may return slightly more than nfeatures (ties in response): keep the strongest
        order = np.argsort([-k.response for k in kps], kind="stable")[: self.conf.sift.max_keypoints]
        kps = [kps[i] for i in order]
        desc = desc[order]
        xy = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
        return Features(
            keypoints=scale_keypoints_back(xy, factors),
            descriptors=root_sift(desc),
            scores=np.array([k.response for k in kps], np.float32),
            scales=np.array([k.size for k in kps], np.float32) / np.float32(factors[0]),
            image_size=(w, h),
            global_descriptor=glob,
        )
