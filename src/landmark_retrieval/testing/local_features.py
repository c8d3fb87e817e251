"""Synthetic DELG-like local features with known geometry, for benchmarks and tests.

Stands in for DELG local features when the model is not available. Each landmark is a planar
scene of points, each with a 128-d "true" descriptor; an image of it sees the plane through a
random homography (scale, rotation, mild perspective, translation) and observes a subset of the
points in its frame, with pixel noise on the keypoints and descriptor noise; clutter features
(random descriptors at random places) fill it up to ``num_features``. Distractor images are all
clutter.

Descriptors are L2-normalised Gaussians with an anisotropic spectrum (variance of dimension k
proportional to 1/k), which makes unrelated descriptors plausibly close: the nearest of 1000
unrelated descriptors is closer than 0.9 (the host baseline's matching threshold) for about a
fifth of the rows, while two observations of the same point are ~0.7 apart (10-90 %: 0.55-0.9).
Nothing here is fitted to real DELG statistics; it exercises matching and RANSAC with a
realistic mix of inliers and outliers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..features import Features
from .two_view import project

IMAGE_SIZE = (1024, 768)  # (width, height) of every synthetic image


@dataclass
class SyntheticSet:
    """Images of a synthetic set: features by image id, landmark labels and verification tasks."""

    train: Dict[str, Features] = field(default_factory=dict)
    test: Dict[str, Features] = field(default_factory=dict)
    train_labels: Dict[str, int] = field(default_factory=dict)
    test_labels: Dict[str, Optional[int]] = field(default_factory=dict)  # None: a distractor
    #: (test id, candidate train ids): the same-landmark views first, then other landmarks
    tasks: List[Tuple[str, List[str]]] = field(default_factory=list)

    def is_positive(self, test_id: str, train_id: str) -> bool:
        """Whether the two images show the same landmark."""
        return self.test_labels[test_id] == self.train_labels[train_id]


def _spectrum(dim: int) -> np.ndarray:
    lam = 1.0 / np.arange(1, dim + 1)
    return np.sqrt(lam / lam.sum())


def random_descriptors(rng: np.random.Generator, n: int, dim: int = 128) -> np.ndarray:
    """(n, dim) float32 unit rows from the anisotropic Gaussian of the module docstring."""
    g = rng.standard_normal((n, dim)) * _spectrum(dim)
    return (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)


def _observe(rng: np.random.Generator, true: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Noisy unit observations of ``true`` (n, dim) with per-row noise levels ``noise`` (n,)."""
    o = true + rng.standard_normal(true.shape) * _spectrum(true.shape[1]) * noise[:, None]
    return (o / np.linalg.norm(o, axis=1, keepdims=True)).astype(np.float32)


def _random_view(rng: np.random.Generator, scene_size: Tuple[float, float]) -> np.ndarray:
    """A 3x3 homography from scene-plane coordinates to image pixels."""
    w, h = IMAGE_SIZE
    sw, sh = scene_size
    s, a = rng.uniform(0.6, 1.3), np.deg2rad(rng.uniform(-20, 20))
    to_origin = np.array([[1, 0, -sw / 2], [0, 1, -sh / 2], [0, 0, 1.0]])
    rot = np.array([[s * np.cos(a), -s * np.sin(a), 0], [s * np.sin(a), s * np.cos(a), 0], [0, 0, 1.0]])
    shear, px, py = rng.uniform(-0.1, 0.1), rng.uniform(-3e-4, 3e-4), rng.uniform(-3e-4, 3e-4)
    persp = np.array([[1, shear, 0], [0, 1, 0], [px, py, 1]])
    to_image = np.array([[1, 0, w / 2 + rng.uniform(-150, 150)], [0, 1, h / 2 + rng.uniform(-100, 100)], [0, 0, 1.0]])
    return to_image @ persp @ rot @ to_origin


def _image(rng: np.random.Generator, num_features: int, dim: int,
           scene: Optional[Tuple[np.ndarray, np.ndarray, Tuple[float, float]]]) -> Features:
    """One image: observed scene points (if ``scene``) plus clutter, ``num_features`` in all."""
    w, h = IMAGE_SIZE
    kps, descs = [np.zeros((0, 2))], [np.zeros((0, dim), np.float32)]
    if scene is not None:
        points, true_desc, size = scene
        xy = project(_random_view(rng, size), points)
        inside = np.flatnonzero((xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h))
        seen = rng.permutation(inside)[:int(rng.uniform(0.25, 0.6) * num_features)]
        kps.append(xy[seen] + rng.normal(0, 1.0, (len(seen), 2)))
        descs.append(_observe(rng, true_desc[seen], rng.uniform(0.4, 0.8, len(seen))))
    n_clutter = num_features - len(kps[-1])
    kps.append(rng.uniform((0, 0), (w, h), (n_clutter, 2)))
    descs.append(random_descriptors(rng, n_clutter, dim))
    order = rng.permutation(num_features)
    scores = np.sort(rng.uniform(175, 600, num_features).astype(np.float32))[::-1]  # attention, best first
    return Features(
        keypoints=np.concatenate(kps)[order].astype(np.float32),
        descriptors=np.concatenate(descs)[order],
        scores=scores.copy(),
        scales=np.ones(num_features, np.float32),
        image_size=IMAGE_SIZE,
    )


def delg_like_set(num_landmarks: int = 40, train_views: int = 5, test_views: int = 4,
                  num_distractors: int = 40, num_candidates: int = 10, positives: int = 3,
                  num_features: int = 1000, dim: int = 128, scene_points: int = 3000,
                  seed: int = 0) -> SyntheticSet:
    """A seeded synthetic recognition set with verification tasks.

    Args:
        num_landmarks: planar scenes; each has ``train_views`` train and ``test_views`` test images.
        num_distractors: test images of no landmark (clutter only).
        num_candidates: candidates per test image; for a landmark image, ``positives`` of them
            are train views of its landmark (the rest: random other landmarks' views).
        num_features: local features per image (DELG keeps at most 1000).
        scene_points: points per scene plane (a view sees a random subset of those in frame).

    Returns:
        A :class:`SyntheticSet` (ids ``train-LLL-V``, ``test-LLL-V``, ``distractor-N``).
    """
    rng = np.random.default_rng(seed)
    out = SyntheticSet()
    by_label: Dict[int, List[str]] = {}
    for lm in range(num_landmarks):
        size = (rng.uniform(900, 1400), rng.uniform(700, 1000))
        scene = (rng.uniform((0, 0), size, (scene_points, 2)), random_descriptors(rng, scene_points, dim), size)
        for v in range(train_views):
            image_id = f"train-{lm:03d}-{v}"
            out.train[image_id] = _image(rng, num_features, dim, scene)
            out.train_labels[image_id] = lm
            by_label.setdefault(lm, []).append(image_id)
        for v in range(test_views):
            image_id = f"test-{lm:03d}-{v}"
            out.test[image_id] = _image(rng, num_features, dim, scene)
            out.test_labels[image_id] = lm
    for d in range(num_distractors):
        image_id = f"distractor-{d:03d}"
        out.test[image_id] = _image(rng, num_features, dim, None)
        out.test_labels[image_id] = None
    train_ids = list(out.train)
    for test_id, label in out.test_labels.items():
        same = [] if label is None else list(rng.permutation(by_label[label])[:positives])
        others = [i for i in train_ids if out.train_labels[i] != label]
        picked = [str(i) for i in rng.choice(others, min(len(others), num_candidates - len(same)), replace=False)]
        out.tasks.append((test_id, [str(i) for i in same] + picked))
    return out


