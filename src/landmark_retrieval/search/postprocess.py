"""Post-processing of global descriptors: PCA / PCA-whitening, query expansion, database-side
augmentation. Pure computation on arrays (the retrieve step wires them to stores).

* PCA-whitening (Jégou & Chum 2012) learned on database descriptors only: ``y = normalize((x -
  mean) @ P)`` with ``P = U[:, :d]`` (PCA) or ``U[:, :d] / sqrt(lambda[:d] + eps)`` (whitening);
  optional reduction to ``d`` dimensions (e.g. 2048 -> 512) also cuts kNN memory and time.
* alpha-QE (Radenović et al. 2018): a query becomes ``normalize(q + sum_i s_i^alpha d_i)`` over
  its k nearest database descriptors (similarities ``s_i`` clipped at 0), then is searched again.
* DBA: every database descriptor becomes ``normalize(d + sum_i s_i^alpha d_i)`` over its k
  nearest *other* database descriptors.

Every function takes and returns float32 rows; empty inputs give correctly shaped empty arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..features import l2_normalize


@dataclass
class Projection:
    """A learned PCA (or PCA-whitening) projection."""

    mean: np.ndarray  # (D,) float32
    matrix: np.ndarray  # (D, d) float32
    eigenvalues: np.ndarray  # (d,) float64, descending
    whiten: bool

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def apply(self, x: np.ndarray, block: int = 65536, dtype: type = np.float32) -> np.ndarray:
        """Project rows (N, D) -> unit rows (N, d) of ``dtype``, in blocks of ``block`` rows."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"Expected descriptors of shape (N, {self.mean.shape[0]}), got {x.shape}")
        out = np.empty((len(x), self.dim), dtype)
        for s in range(0, len(x), block):
            out[s:s + block] = l2_normalize((np.asarray(x[s:s + block], np.float32) - self.mean) @ self.matrix)
        return out


def fit_pca(x: np.ndarray, dim: Optional[int] = None, whiten: bool = False, eps: float = 1e-6,
            block: int = 65536) -> Projection:
    """Learn PCA (or PCA-whitening) on database descriptors, in bounded memory.

    Args:
        x: (N, D) descriptors (float16 or float32), N >= 2.
        dim: output dimension; None keeps ``min(D, N - 1)`` (the directions with variance).
        whiten: divide each direction by the square root of its variance (plus ``eps`` times
            the mean variance, so that near-empty directions are not blown up).
        block: rows per block of the covariance accumulation (float64, D x D).

    Returns:
        The :class:`Projection`.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"Expected descriptors (N, D), got shape {x.shape}")
    n, d_in = x.shape
    if n < 2:
        raise ValueError(f"PCA needs at least 2 database descriptors, got {n}")
    keep = min(d_in, n - 1)
    if dim is not None:
        if int(dim) < 1:
            raise ValueError(f"retrieve.pca_dim must be a positive integer or none, got {dim}")
        keep = min(keep, int(dim))
    total = np.zeros(d_in, np.float64)
    for s in range(0, n, block):
        total += np.asarray(x[s:s + block], np.float64).sum(axis=0)
    mean = total / n
    cov = np.zeros((d_in, d_in), np.float64)
    for s in range(0, n, block):
        c = np.asarray(x[s:s + block], np.float64) - mean
        cov += c.T @ c
    cov /= n
    eigenvalues, vectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1][:keep]
    eigenvalues, vectors = np.maximum(eigenvalues[order], 0.0), vectors[:, order]
    # a deterministic sign for every direction: its largest component is positive
    signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(keep)])
    vectors = vectors * np.where(signs == 0, 1.0, signs)
    matrix = vectors
    if whiten:
        matrix = vectors / np.sqrt(eigenvalues + eps * max(float(eigenvalues.mean()), 1e-12))
    return Projection(mean.astype(np.float32), matrix.astype(np.float32), eigenvalues, bool(whiten))


def without_self(scores: np.ndarray, indices: np.ndarray, k: int) -> tuple:
    """Drop each row's own index from a database-against-itself kNN result (row i of the
    result is database row i), keeping the first ``k`` other neighbours in order."""
    own = indices == np.arange(len(indices))[:, None]
    order = np.argsort(own, axis=1, kind="stable")[:, :k]  # self (if present) moves last
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


def expand(x: np.ndarray, neighbours: np.ndarray, scores: np.ndarray, database: np.ndarray,
           alpha: float = 3.0) -> np.ndarray:
    """alpha-weighted expansion: ``normalize(x + sum_i max(s_i, 0)^alpha * database[n_i])``.

    Args:
        x: (M, D) rows to expand (queries for QE, the database itself for DBA).
        neighbours: (M, k) int64 rows of ``database``; scores: (M, k) their similarities.
        database: (N, D).
        alpha: weight exponent (0: plain average with weight 1 each).

    Returns:
        (M, D) float32 unit rows.
    """
    x = np.asarray(x, np.float32)
    if len(x) == 0 or neighbours.size == 0:
        return l2_normalize(x)
    weights = np.maximum(np.asarray(scores, np.float32), 0.0) ** float(alpha)
    out = x.copy()
    for j in range(neighbours.shape[1]):
        out += weights[:, j:j + 1] * np.asarray(database[neighbours[:, j]], np.float32)
    return l2_normalize(out)
