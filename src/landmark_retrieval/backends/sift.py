"""Classical backend: RootSIFT local features and a VLAD global descriptor. No weights needed.

RootSIFT (Arandjelovic & Zisserman 2012): SIFT descriptors L1-normalised, then square-rooted,
so that Euclidean distance between them is the Hellinger kernel; rows come out L2-unit.
VLAD: residuals of the descriptors to their nearest k-means word, summed per word,
intra-normalised per word (optional), signed power-law normalised, L2-normalised.
The codebook is fitted on train images only (OpenCV k-means, seeded by ``extract.vlad.seed``)
and stored with the features.
"""
from __future__ import annotations

import logging
from typing import Optional

import cv2
import numpy as np

from ..config import ExtractConfig
from ..images import resize_max_side, scale_keypoints_back
from .base import Backend, Features, GlobalAggregator

logger = logging.getLogger("landmark_retrieval")


def root_sift(descriptors: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """RootSIFT from SIFT descriptors (N, 128) -> (N, 128) float32 with unit L2 rows."""
    d = np.asarray(descriptors, np.float32)
    if d.size == 0:
        return np.zeros((0, d.shape[1] if d.ndim == 2 else 128), np.float32)
    d = d / (np.abs(d).sum(axis=1, keepdims=True) + eps)
    d = np.sqrt(np.maximum(d, 0.0))
    return (d / (np.linalg.norm(d, axis=1, keepdims=True) + eps)).astype(np.float32)


class VladAggregator(GlobalAggregator):
    """VLAD over a k-means codebook (see the module docstring)."""

    def __init__(self, num_words: int = 64, power: float = 0.5, intra_normalization: bool = True,
                 seed: int = 0, max_training_descriptors: int = 200_000):
        self.num_words = int(num_words)
        self.power = float(power)
        self.intra = bool(intra_normalization)
        self.seed = int(seed)
        self.max_training = int(max_training_descriptors)

    def fit(self, descriptors: np.ndarray) -> np.ndarray:
        """k-means on descriptors (M, D) -> codebook (K, D) float32 (K <= M), seeded."""
        x = np.ascontiguousarray(descriptors, np.float32)
        if len(x) == 0:
            raise ValueError("Cannot fit a VLAD codebook: the train images gave no local descriptors")
        rng = np.random.default_rng(self.seed)
        if len(x) > self.max_training:
            x = x[np.sort(rng.choice(len(x), self.max_training, replace=False))]
        k = min(self.num_words, len(x))
        # OpenCV's k-means, also when faiss is installed: the codebook (and so every score) is then
        # the same with and without the [faiss] extra. It takes seconds for 200,000 descriptors.
        cv2.setRNGSeed(self.seed)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 25, 1e-4)
        _, _, centroids = cv2.kmeans(x, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
        return np.ascontiguousarray(centroids, np.float32)

    def encode(self, descriptors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
        """VLAD of one image: descriptors (N, D) -> (K * D,) float32, unit norm (zeros if N == 0)."""
        k, dim = codebook.shape
        out = np.zeros((k, dim), np.float32)
        x = np.asarray(descriptors, np.float32)
        if len(x):
            d2 = (x * x).sum(1)[:, None] - 2.0 * x @ codebook.T + (codebook * codebook).sum(1)[None]
            words = np.argmin(d2, axis=1)
            np.add.at(out, words, x - codebook[words])
            if self.intra:
                norms = np.linalg.norm(out, axis=1, keepdims=True)
                out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
        v = out.reshape(-1)
        v = np.sign(v) * np.abs(v) ** self.power
        n = np.linalg.norm(v)
        return (v / n if n > 0 else v).astype(np.float32)


class SiftBackend(Backend):
    """RootSIFT keypoints/descriptors (OpenCV SIFT) + VLAD global descriptor.

    Reads ``extract.sift`` and ``extract.vlad`` (see :data:`landmark_retrieval.backends.BACKENDS`);
    :meth:`Backend.describe` stores both sections with the features.
    """

    name = "sift"
    local_dim = 128

    def __init__(self, conf: Optional[ExtractConfig] = None):
        self.conf = conf or ExtractConfig(backend="sift")
        sift, vlad = self.conf.sift, self.conf.vlad
        self._sift = cv2.SIFT_create(
            nfeatures=int(sift.max_keypoints),
            contrastThreshold=float(sift.contrast_threshold),
        )
        self.aggregator = VladAggregator(
            num_words=vlad.num_words,
            power=vlad.power,
            intra_normalization=vlad.intra_normalization,
            seed=vlad.seed,
            max_training_descriptors=vlad.max_training_descriptors,
        )

    def extract(self, image: np.ndarray, local: bool = True, global_: bool = True) -> Features:
        """RootSIFT features of an RGB uint8 image (H, W, 3); no global descriptor (see VLAD,
        which needs the local features, so they are always computed)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        small, factors = resize_max_side(image, self.conf.max_image_size)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        kps, desc = self._sift.detectAndCompute(gray, None)
        if desc is None or not kps:
            return Features.empty(self.local_dim, (w, h))
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
        )
