"""Fisher vectors (``extract.global_descriptor=fisher``): a diagonal GMM fitted on PCA-reduced
local descriptors of the database, gradients with respect to its means and variances,
power- and L2-normalised (Perronnin et al. 2010)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

import numpy as np

from .base import GlobalAggregator
from .codebook import as_float_descriptors, kmeans, no_descriptors_error, training_rows, unit_vector

if TYPE_CHECKING:  # config imports this package lazily; no import cycle at run time
    pass

logger = logging.getLogger("landmark_retrieval")



@dataclass
class FisherModel:
    """A diagonal GMM over (optionally PCA-projected) local descriptors."""

    weights: np.ndarray  # (K,) mixture weights, sum 1
    means: np.ndarray  # (K, D)
    variances: np.ndarray  # (K, D) > 0
    pca_mean: Optional[np.ndarray] = None  # (D_in,) or None (no PCA)
    pca_components: Optional[np.ndarray] = None  # (D, D_in) orthonormal rows, or None

    def to_array(self) -> np.ndarray:
        """Packed as one float32 vector: ``[K, D, D_in, has_pca, weights, means, variances,
        (pca_mean, pca_components)]`` (matrices row-major)."""
        k, d = self.means.shape
        has_pca = self.pca_components is not None
        d_in = self.pca_components.shape[1] if has_pca else d
        parts = [np.array([k, d, d_in, int(has_pca)], np.float64), self.weights.ravel(), self.means.ravel(),
                 self.variances.ravel()]
        if has_pca:
            parts += [self.pca_mean.ravel(), self.pca_components.ravel()]
        return np.concatenate([np.asarray(p, np.float64) for p in parts]).astype(np.float32)

    @classmethod
    def from_array(cls, array: np.ndarray) -> "FisherModel":
        """Inverse of :meth:`to_array` (float64 parameters)."""
        a = np.asarray(array, np.float64).ravel()
        if len(a) < 4:
            raise ValueError(f"Not a Fisher-vector model: {len(a)} values (an old or other codebook?)")
        k, d, d_in, has_pca = (int(v) for v in a[:4])
        expected = 4 + k + 2 * k * d + (d_in + d * d_in if has_pca else 0)
        if len(a) != expected:
            raise ValueError(f"Not a Fisher-vector model: {len(a)} values, expected {expected} "
                             f"(K={k}, D={d}); delete codebook.h5 to fit it again")
        o = 4
        weights = a[o:o + k]
        o += k
        means = a[o:o + k * d].reshape(k, d)
        o += k * d
        variances = a[o:o + k * d].reshape(k, d)
        o += k * d
        if not has_pca:
            return cls(weights, means, variances)
        pca_mean = a[o:o + d_in]
        o += d_in
        return cls(weights, means, variances, pca_mean, a[o:o + d * d_in].reshape(d, d_in))

    def project(self, x: np.ndarray) -> np.ndarray:
        """Local descriptors (N, D_in) -> (N, D) float64 (the PCA, when there is one)."""
        x = np.asarray(x, np.float64)
        if self.pca_components is None:
            return x
        return (x - self.pca_mean) @ self.pca_components.T

    def log_posteriors(self, y: np.ndarray) -> np.ndarray:
        """log p(k | y) of projected descriptors (N, D) -> (N, K) float64."""
        inv = 1.0 / self.variances
        logp = -0.5 * ((y * y) @ inv.T - 2.0 * y @ (self.means * inv).T
                       + (self.means ** 2 * inv).sum(1)[None] + np.log(2 * np.pi * self.variances).sum(1)[None])
        logp += np.log(np.maximum(self.weights, 1e-300))[None]
        top = logp.max(axis=1, keepdims=True)
        return logp - (top + np.log(np.exp(logp - top).sum(axis=1, keepdims=True)))


def _pca(x: np.ndarray, dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """Mean (D_in,) and the top ``dim`` principal axes (dim, D_in) of x (M, D_in), float64, each
    axis signed so that its largest-magnitude entry is positive (deterministic)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    c = x - mean
    cov = c.T @ c / max(1, len(x))
    values, vectors = np.linalg.eigh(cov)
    comps = vectors[:, np.argsort(-values, kind="stable")[:dim]].T
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    return mean, comps * np.where(signs == 0, 1.0, signs)[:, None]


class FisherAggregator(GlobalAggregator):
    """Improved Fisher vector over a diagonal GMM (see the module docstring).

    The model is :meth:`FisherModel.to_array` (one float32 vector).
    """

    #: posteriors (rows x components) per E-step block, bounding the EM's memory
    block = 1 << 20

    def __init__(self, num_components: int = 32, pca_dim: Optional[int] = 64, power: float = 0.5,
                 iterations: int = 20, seed: int = 0, max_training_descriptors: int = 100_000,
                 binary: bool = False):
        self.num_components = int(num_components)
        self.pca_dim = None if pca_dim is None else int(pca_dim)
        self.power = float(power)
        self.iterations = int(iterations)
        self.seed = int(seed)
        self.max_training = int(max_training_descriptors)
        self.binary = bool(binary)

    @property
    def num_words(self) -> int:
        """The number of GMM components (what the extract step logs)."""
        return self.num_components

    def global_dim(self, local_dim: int) -> int:
        d = int(local_dim) if self.pca_dim is None else min(self.pca_dim, int(local_dim))
        return 2 * self.num_components * d

    def fit(self, descriptors: np.ndarray) -> np.ndarray:
        """PCA (optional) and a diagonal GMM fitted by EM on descriptors (M, D_in) -> the packed
        model (see :meth:`FisherModel.to_array`); K = min(num_components, M)."""
        x = training_rows(descriptors, self.max_training, self.seed, self.binary)
        if len(x) == 0:
            raise no_descriptors_error("Fisher-vector GMM")
        pca_mean = pca_comps = None
        if self.pca_dim is not None and self.pca_dim < x.shape[1]:
            pca_mean, pca_comps = _pca(x, self.pca_dim)
            y = (x.astype(np.float64) - pca_mean) @ pca_comps.T
        else:
            y = x.astype(np.float64)
        means = kmeans(y.astype(np.float32), self.num_components, self.seed).astype(np.float64)
        k = len(means)
        global_var = y.var(axis=0)
        floor = np.maximum(1e-3 * global_var, 1e-8)
        model = FisherModel(np.full(k, 1.0 / k), means, np.tile(np.maximum(global_var, floor), (k, 1)),
                            pca_mean, pca_comps)
        rows = max(1, self.block // k)
        for _ in range(self.iterations):
            s0 = np.zeros(k)
            s1 = np.zeros((k, y.shape[1]))
            s2 = np.zeros((k, y.shape[1]))
            for t in range(0, len(y), rows):
                yb = y[t:t + rows]
                r = np.exp(model.log_posteriors(yb))
                s0 += r.sum(axis=0)
                s1 += (yb.T @ r).T  # (D, K) products: several times faster than r.T @ yb in BLAS
                s2 += ((yb * yb).T @ r).T
            alive = s0 > 1e-10 * len(y)
            safe = np.where(alive, s0, 1.0)[:, None]
            means = np.where(alive[:, None], s1 / safe, model.means)
            variances = np.where(alive[:, None], s2 / safe - means ** 2, model.variances)
            weights = np.maximum(s0 / len(y), 1e-10)
            model = FisherModel(weights / weights.sum(), means, np.maximum(variances, floor), pca_mean, pca_comps)
        return model.to_array()

    def encode(self, descriptors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
        """Fisher vector of one image: descriptors (N, D_in) -> (2 * K * D,) float32: the mean
        gradients (K, D) then the standard-deviation gradients (K, D), signed power law, unit
        L2 (zeros if N == 0)."""
        model = FisherModel.from_array(codebook)
        k, d = model.means.shape
        x = as_float_descriptors(descriptors, self.binary)
        if len(x) == 0:
            return np.zeros(2 * k * d, np.float32)
        y = model.project(x)
        gamma = np.exp(model.log_posteriors(y))  # (N, K)
        s0 = gamma.sum(axis=0)[:, None]
        s1 = (y.T @ gamma).T
        s2 = ((y * y).T @ gamma).T
        mu, var, w = model.means, model.variances, model.weights[:, None]
        n = float(len(y))
        g_mu = (s1 - s0 * mu) / np.sqrt(var) / (n * np.sqrt(w))
        g_sigma = ((s2 - 2.0 * mu * s1 + s0 * mu ** 2) / var - s0) / (n * np.sqrt(2.0 * w))
        v = np.concatenate([g_mu.ravel(), g_sigma.ravel()])
        v = np.sign(v) * np.abs(v) ** self.power
        return unit_vector(v)
