"""Synthetic putative matches with known inliers, for the robust estimators' tests and benchmark.

* :func:`planar_matches`: points of a plane seen through a known homography (``H_TRUE``);
* :func:`two_view_matches`: 3-D points (not on a plane) seen by two calibrated cameras, whose
  fundamental matrix is known (:func:`true_fundamental`);

both with Gaussian pixel noise on the inliers and outliers drawn uniformly over the image.
Seeded: the same arguments give the same arrays.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

IMAGE_SIZE = (1000, 800)  # (width, height)
H_TRUE = np.array([[0.9, 0.15, 40.0], [-0.1, 1.05, -25.0], [2e-4, -1e-4, 1.0]])
_K = np.array([[800.0, 0, 500], [0, 800, 400], [0, 0, 1]])
_ANGLE = np.deg2rad(12)
_R = np.array([[np.cos(_ANGLE), 0, np.sin(_ANGLE)], [0, 1, 0], [-np.sin(_ANGLE), 0, np.cos(_ANGLE)]])
_T = np.array([-1.0, 0.1, 0.2])

Matches = Tuple[np.ndarray, np.ndarray, np.ndarray]  # p0 (K, 2), p1 (K, 2) float64, inlier truth (K,) bool


def project(H: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Points (N, 2) mapped by a homography (3, 3) -> (N, 2)."""
    q = np.c_[p, np.ones(len(p))] @ np.asarray(H).T
    return q[:, :2] / q[:, 2:]


def grid_error(H: np.ndarray, truth: np.ndarray, image_size: Tuple[int, int], n: int = 10) -> np.ndarray:
    """Transfer error (pixels) of homography ``H`` against ``truth`` at the (n * n,) points of
    an n x n grid spanning an image of ``image_size`` (width, height)."""
    w, h = image_size
    grid = np.stack(np.meshgrid(np.linspace(0, w - 1, n), np.linspace(0, h - 1, n)), -1).reshape(-1, 2)
    return np.linalg.norm(project(H, grid) - project(truth, grid), axis=1)


def _outliers(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform([0, 0], IMAGE_SIZE, (n, 2))


def planar_matches(seed: int = 0, inliers: int = 200, outliers: int = 150, noise: float = 0.5) -> Matches:
    """``inliers`` matches of :data:`H_TRUE` (noise in pixels, standard deviation) followed by
    ``outliers`` whose second point is uniform over the image."""
    rng = np.random.default_rng(seed)
    p0 = _outliers(rng, inliers + outliers)
    p1 = project(H_TRUE, p0) + rng.normal(0, noise, p0.shape)
    p1[inliers:] = _outliers(rng, outliers)
    return p0, p1, np.arange(inliers + outliers) < inliers


def two_view_matches(seed: int = 0, inliers: int = 200, outliers: int = 100, noise: float = 0.3) -> Matches:
    """``inliers`` projections of 3-D points (depth 6 to 14, in front of both cameras; the second
    camera turned by 12 degrees and moved sideways) followed by ``outliers`` uniform pairs."""
    rng = np.random.default_rng(seed)
    X = rng.uniform([-3, -2, 6], [3, 2, 14], (inliers, 3))
    x0, x1 = X @ _K.T, (X @ _R.T + _T) @ _K.T
    p0 = np.concatenate([x0[:, :2] / x0[:, 2:] + rng.normal(0, noise, (inliers, 2)), _outliers(rng, outliers)])
    p1 = np.concatenate([x1[:, :2] / x1[:, 2:] + rng.normal(0, noise, (inliers, 2)), _outliers(rng, outliers)])
    return p0, p1, np.arange(inliers + outliers) < inliers


def true_fundamental() -> np.ndarray:
    """F (3, 3) of the two cameras of :func:`two_view_matches`: ``[x1, 1] F [x0, 1]^T = 0``."""
    tx = np.array([[0, -_T[2], _T[1]], [_T[2], 0, -_T[0]], [-_T[1], _T[0], 0]])
    Kinv = np.linalg.inv(_K)
    F = Kinv.T @ tx @ _R @ Kinv
    return F / np.linalg.norm(F)


def epipolar_distance(F: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance (N,) in pixels of each point of ``p1`` to the epipolar line ``F p0`` of its match."""
    x0, x1 = np.c_[p0, np.ones(len(p0))], np.c_[p1, np.ones(len(p1))]
    lines = x0 @ np.asarray(F).T
    return np.abs((x1 * lines).sum(1)) / np.linalg.norm(lines[:, :2], axis=1)
