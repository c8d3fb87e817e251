"""ORB backend: binary local features (OpenCV ORB: oriented FAST keypoints, rotated BRIEF
descriptors of 256 bits) and a VLAD global descriptor over their bits. No weights needed.

Descriptors are stored as they come, packed bits: uint8 (N, 32) (see
:mod:`landmark_retrieval.features`); the verify step matches them by Hamming distance
(``verify.max_hamming_distance``). ORB is about an order of magnitude faster to extract than
SIFT and its descriptors take 32 bytes instead of 512, at the price of less distinctive matches.

The global descriptor is VLAD (``extract.vlad``, as for ``sift``) over the descriptors unpacked
to float (N, 256) vectors of 0s and 1s (:func:`~landmark_retrieval.backends.codebook.as_float_descriptors`;
the training sample is drawn on the packed rows); the codebook is fitted on train images only,
seeded, and stored with the features.
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


#: bytes of one ORB descriptor (256 bits)
ORB_BYTES = 32


class OrbBackend(Backend):
    """ORB keypoints and binary descriptors (OpenCV) + VLAD global descriptor.

    Reads ``extract.orb`` and ``extract.vlad`` (see :data:`landmark_retrieval.backends.registry.BACKENDS`).
    Keypoints are in original-image pixels, ``scores`` the ORB (Harris) response, ``scales``
    the keypoint size in original-image pixels; descriptors (N, 32) uint8.
    """

    name = "orb"
    local_dim = ORB_BYTES

    def __init__(self, conf: Optional[ExtractConfig] = None):
        self.conf = conf or ExtractConfig(backend="orb")
        orb = self.conf.orb
        if orb.max_keypoints < 1 or orb.n_levels < 1 or not orb.scale_factor > 1.0:
            raise ValueError("extract.orb: max_keypoints and n_levels must be positive and scale_factor > 1, got "
                             f"{orb.max_keypoints}, {orb.n_levels}, {orb.scale_factor}")
        self._orb = cv2.ORB_create(
            nfeatures=int(orb.max_keypoints),
            scaleFactor=float(orb.scale_factor),
            nlevels=int(orb.n_levels),
            edgeThreshold=int(orb.edge_threshold),
            patchSize=int(orb.patch_size),
            fastThreshold=int(orb.fast_threshold),
        )
        # extract.global_descriptor (VLAD by default) over the unpacked bits, or the colour histogram
        self.aggregator, self._image_global = make_global(self.conf, binary=True)

    def describe(self) -> dict:
        """:meth:`Backend.describe` with the selected global descriptor's section only."""
        return describe_global(super().describe(), self.conf)

    def extract(self, image: np.ndarray, local: bool = True, global_: bool = True) -> Features:
        """ORB features of an RGB uint8 image (H, W, 3); no global descriptor (VLAD needs the
        codebook, so local features are always computed)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        small, factors = resize_max_side(image, self.conf.max_image_size)
        glob = self._image_global(small) if self._image_global is not None and global_ else None
        if self._image_global is not None and not local:  # colour histogram only
            return Features.empty(self.local_dim, (w, h), global_descriptor=glob, dtype=np.uint8)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        kps, desc = self._orb.detectAndCompute(gray, None)
        if desc is None or not kps:
            return Features.empty(self.local_dim, (w, h), global_descriptor=glob, dtype=np.uint8)
        # the strongest first (ties: OpenCV's order), at most max_keypoints
        order = np.argsort([-k.response for k in kps], kind="stable")[: self.conf.orb.max_keypoints]
        kps = [kps[i] for i in order]
        xy = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
        return Features(
            keypoints=scale_keypoints_back(xy, factors),
            descriptors=np.ascontiguousarray(desc[order], np.uint8),
            scores=np.array([k.response for k in kps], np.float32),
            scales=np.array([k.size for k in kps], np.float32) / np.float32(factors[0]),
            image_size=(w, h),
            global_descriptor=glob,
        )
