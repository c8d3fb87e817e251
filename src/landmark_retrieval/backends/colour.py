"""Colour histograms: a weight-free global descriptor of the whole image (``extract.global_descriptor=colour``)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Dict, Sequence, Tuple

import cv2
import numpy as np

from .codebook import unit_vector

if TYPE_CHECKING:  # config imports this package lazily; no import cycle at run time
    pass

logger = logging.getLogger("landmark_retrieval")



#: OpenCV 8-bit conversion and the value range of each channel
COLOUR_SPACES: Dict[str, Tuple[int, Tuple[int, int, int]]] = {
    "hsv": (cv2.COLOR_RGB2HSV, (180, 256, 256)),  # H in [0, 180), S and V in [0, 256)
    "lab": (cv2.COLOR_RGB2LAB, (256, 256, 256)),  # L * 255 / 100, a + 128, b + 128
}


COLOUR_NORMALIZATIONS = ("hellinger", "l2")


def colour_histogram(image: np.ndarray, space: str = "hsv", bins: Sequence[int] = (8, 8, 8),
                     normalization: str = "hellinger") -> np.ndarray:
    """Joint colour histogram of an RGB uint8 image (H, W, 3) or a grey one (H, W).

    A pixel with channel values ``c`` falls in bin ``floor(c * bins / range)`` of each channel
    (ranges: :data:`COLOUR_SPACES`); the flat index is ``(i0 * bins[1] + i1) * bins[2] + i2``.

    Returns:
        (prod(bins),) float32: ``hellinger`` = square root of the L1-normalised counts (unit L2),
        ``l2`` = the counts over their L2 norm; zeros for an image without pixels.
    """
    if space not in COLOUR_SPACES:
        raise ValueError(f"extract.colour.space: expected one of {', '.join(COLOUR_SPACES)}, got {space!r}")
    if normalization not in COLOUR_NORMALIZATIONS:
        raise ValueError(f"extract.colour.normalization: expected one of {', '.join(COLOUR_NORMALIZATIONS)}, "
                         f"got {normalization!r}")
    b = tuple(int(v) for v in bins)
    if len(b) != 3 or min(b) < 1:
        raise ValueError(f"extract.colour.bins: expected three positive bin counts, e.g. 8,8,8, got {bins!r}")
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"Expected an RGB uint8 image (H, W, 3) or a grey one (H, W), got {img.dtype} {img.shape}")
    total = int(np.prod(b))
    if img.size == 0:
        return np.zeros(total, np.float32)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    code, ranges = COLOUR_SPACES[space]
    converted = cv2.cvtColor(np.ascontiguousarray(img), code).reshape(-1, 3).astype(np.int64)
    idx = [np.minimum(converted[:, c] * b[c] // ranges[c], b[c] - 1) for c in range(3)]
    flat = (idx[0] * b[1] + idx[1]) * b[2] + idx[2]
    counts = np.bincount(flat, minlength=total).astype(np.float64)
    if normalization == "hellinger":
        return np.sqrt(counts / counts.sum()).astype(np.float32)
    return unit_vector(counts)


class ColourDescriptor:
    """The ``colour`` global descriptor: an image function (see :func:`colour_histogram`)."""

    def __init__(self, space: str = "hsv", bins: Sequence[int] = (8, 8, 8), normalization: str = "hellinger"):
        self.space = space
        self.bins = tuple(int(v) for v in bins)
        self.normalization = normalization

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(prod(bins),) float32 unit descriptor of an RGB uint8 image."""
        return colour_histogram(image, self.space, self.bins, self.normalization)
