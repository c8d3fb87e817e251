"""Codebook helpers shared by the aggregating global descriptors (VLAD, BoW, Fisher): a
deterministic sample of training descriptors, k-means, nearest visual words, unit vectors."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # config imports this package lazily; no import cycle at run time
    pass

logger = logging.getLogger("landmark_retrieval")



def as_float_descriptors(descriptors: np.ndarray, binary: bool = False) -> np.ndarray:
    """Local descriptors as float32 (N, D) for k-means, GMMs and word assignment.

    Binary descriptors, i.e. packed bytes (N, B) (dtype uint8, or any dtype when ``binary``,
    e.g. bytes read back as float32), become their bits (N, 8 * B) float32 in {0, 1} (most
    significant bit first, as ``np.unpackbits``): Euclidean distance between them is the square
    root of the Hamming distance. Float descriptors are returned as float32.
    """
    d = np.asarray(descriptors)
    if d.ndim != 2:
        raise ValueError(f"Expected local descriptors of shape (N, D), got {d.shape}")
    if binary or d.dtype == np.uint8:
        return np.unpackbits(np.ascontiguousarray(d, np.uint8), axis=1).astype(np.float32)
    return np.ascontiguousarray(d, np.float32)


def _sample(x: np.ndarray, max_training: int, seed: int) -> np.ndarray:
    """At most ``max_training`` rows of ``x`` (a seeded subset in the original row order)."""
    if len(x) > max_training:
        rng = np.random.default_rng(seed)
        x = x[np.sort(rng.choice(len(x), max_training, replace=False))]
    return x


def _sorted_rows(x: np.ndarray) -> np.ndarray:
    """Rows of a 2-D array in the order of their bytes: a fit on them does not depend on the
    order they came in."""
    x = np.ascontiguousarray(x)
    if len(x) < 2 or x.shape[1] == 0:
        return x
    keys = x.view(np.dtype((np.void, x.itemsize * x.shape[1]))).ravel()
    return x[np.argsort(keys, kind="stable")]


def training_rows(descriptors: np.ndarray, max_training: int, seed: int, binary: bool = False,
                  sort: bool = True) -> np.ndarray:
    """The descriptors a model is fitted on: (M, D) (packed binary rows too) -> at most
    ``max_training`` rows as float32 (:func:`as_float_descriptors`; binary rows are unpacked
    after the sample is drawn). ``sort``: sort the rows first, so that the sample depends only on
    the multiset of rows and the seed."""
    x = np.asarray(descriptors)
    if x.ndim != 2:
        raise ValueError(f"Expected local descriptors of shape (M, D), got {x.shape}")
    return as_float_descriptors(_sample(_sorted_rows(x) if sort else x, max_training, seed), binary)


def kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 25) -> np.ndarray:
    """Seeded k-means (OpenCV, k-means++ initialisation): x (M, D) float32 -> centroids
    (min(k, M), D) float32.

    OpenCV's, also when faiss is installed: the codebook (and so every score) is then the same
    with and without the [faiss] extra. It takes seconds for 200,000 descriptors and 64 words.
    """
    x = np.ascontiguousarray(x, np.float32)
    k = min(int(k), len(x))
    cv2.setRNGSeed(int(seed))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, int(iterations), 1e-4)
    _, _, centroids = cv2.kmeans(x, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    return np.ascontiguousarray(centroids, np.float32)


def nearest_words(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest codebook row (squared Euclidean) of each row: x (N, D) float32,
    codebook (K, D) float32 -> (N,) int64 (ties: the lower index)."""
    if len(x) == 0:
        return np.zeros(0, np.int64)
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ codebook.T + (codebook * codebook).sum(1)[None]
    return np.argmin(d2, axis=1).astype(np.int64)


def unit_vector(v: np.ndarray) -> np.ndarray:
    """``v`` / its L2 norm as float32 (zeros stay zeros)."""
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else v).astype(np.float32)


def no_descriptors_error(what: str) -> ValueError:
    return ValueError(f"Cannot fit the {what}: the train images gave no local descriptors")
