"""Features of one image: the record every backend produces and every store keeps.

Conventions (fixed here once for the whole package):

* keypoints are ``(x, y)`` float32 pixel coordinates **of the original image** (pixel centres at
  integer coordinates), shape (N, 2);
* local descriptors are row-major float32 (N, D), L2-normalised; binary descriptors (ORB) are
  instead uint8 (N, D) rows of packed bits (D = 32 bytes for 256 bits, ``np.packbits`` order),
  compared by Hamming distance (:func:`is_binary` tells them apart);
* ``scores`` (N,) is the detector response (DELG attention, SIFT response);
  ``scales`` (N,) the keypoint scale (DELG: 1 / image scale, SIFT: keypoint size);
* the global descriptor is float32 (G,), L2-normalised, or None when the backend computes it
  later from local descriptors (VLAD).

An image with no features gives arrays of shape (0, 2), (0, D), (0,), (0,).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np


@dataclass
class Features:
    """Features of one image (see the module docstring for conventions)."""

    keypoints: np.ndarray  # (N, 2) float32, (x, y) original-image pixels
    descriptors: np.ndarray  # (N, D) float32, unit rows; or (N, D) uint8 packed bits (binary)
    scores: np.ndarray  # (N,) float32
    scales: np.ndarray  # (N,) float32
    image_size: Tuple[int, int]  # (width, height) of the original image
    global_descriptor: Optional[np.ndarray] = None  # (G,) float32 unit, or None

    @classmethod
    def empty(cls, dim: int, image_size: Tuple[int, int] = (0, 0),
              global_descriptor: Optional[np.ndarray] = None, dtype: type = np.float32) -> "Features":
        """Features with no keypoints and correctly shaped empty arrays (descriptors (0, dim) of
        ``dtype``: float32, or uint8 for binary descriptors)."""
        return cls(
            keypoints=np.zeros((0, 2), np.float32),
            descriptors=np.zeros((0, dim), dtype),
            scores=np.zeros((0,), np.float32),
            scales=np.zeros((0,), np.float32),
            image_size=image_size,
            global_descriptor=global_descriptor,
        )

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def rows(self, index: np.ndarray) -> "Features":
        """These features restricted to the local features ``index`` (an int array of rows, in
        the order given); the image size and global descriptor are kept."""
        return Features(self.keypoints[index], self.descriptors[index], self.scores[index], self.scales[index],
                        self.image_size, self.global_descriptor)


def is_binary(descriptors: np.ndarray) -> bool:
    """Whether local descriptors are binary (uint8 packed bits, Hamming distance) rather than
    float vectors (Euclidean distance)."""
    return np.asarray(descriptors).dtype == np.uint8


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` (N, D) (or a vector (D,)) scaled to unit L2 norm (zero rows stay zero); float32 (N, D)."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, np.maximum(norms, eps), out=np.zeros_like(x), where=norms > 0)
