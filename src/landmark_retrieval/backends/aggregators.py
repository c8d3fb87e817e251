"""Global descriptors of the classical backends (``sift``, ``orb``), registered in one place:
:data:`GLOBAL_DESCRIPTORS`, selected by ``extract.global_descriptor``.

* ``vlad``: residuals to the nearest k-means word, summed per word, intra-normalised, signed
  power law, L2 (Jegou et al. 2010; Arandjelovic & Zisserman 2013).
* ``bow``: bag of visual words with tf-idf (Sivic & Zisserman 2003): each local descriptor votes
  for its nearest k-means word; the counts are weighted by ``idf = ln(N / df)`` (N train images,
  df of them containing the word; 0 for a word no train image contains), then L2-normalised.
  The vector is sparse (at most one word per keypoint), so an inverted file searches it fast.
* ``fisher``: improved Fisher vector (Perronnin et al. 2010) over a diagonal GMM fitted by EM
  (initialised by seeded k-means), after an optional PCA of the local descriptors: gradients
  with respect to the means and standard deviations (2 * K * D values), signed power law, L2.
* ``colour``: joint colour histogram of the image (HSV or Lab), Hellinger or L2 normalised.
  Computed from the image in the backend's ``extract``; nothing is fitted.

The first three aggregate local descriptors with a model fitted on train images only
(:func:`landmark_retrieval.extract.codebook_sample`; ``bow`` then counts document frequencies
over every train image, :meth:`BowAggregator.fit_documents`); the model is one float32 array
stored with the train features (``codebook.h5``; its layout is each aggregator's ``fit``
docstring). BoW and Fisher models depend only on the multiset of sampled descriptors and the
seed (rows are sorted before fitting); VLAD keeps its historical fit (sample in id order).

Binary descriptors (ORB: packed uint8 (N, 32)) are unpacked to float bits (N, 256) in {0, 1}
before k-means, GMM or assignment (:func:`as_float_descriptors`).

A new global descriptor is its aggregator (or image function), its ``extract`` section in
:class:`landmark_retrieval.config.ExtractConfig` (listed in the backends' ``sections``) and one
entry of :data:`GLOBAL_DESCRIPTORS`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .base import GlobalAggregator

if TYPE_CHECKING:  # config imports this package lazily; no import cycle at run time
    from ..config import ExtractConfig

logger = logging.getLogger("landmark_retrieval")

__all__ = [
    "GLOBAL_DESCRIPTORS", "BowAggregator", "ColourDescriptor", "FisherAggregator", "FisherModel",
    "GlobalDescriptorInfo", "VladAggregator", "as_float_descriptors", "colour_histogram", "describe_global",
    "global_descriptor_info", "kmeans", "make_global", "nearest_words", "training_rows", "validate_global",
]


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------
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


def _unit(v: np.ndarray) -> np.ndarray:
    """``v`` / its L2 norm as float32 (zeros stay zeros)."""
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else v).astype(np.float32)


def _no_descriptors(what: str) -> ValueError:
    return ValueError(f"Cannot fit the {what}: the train images gave no local descriptors")


# --------------------------------------------------------------------------------------------
# VLAD
# --------------------------------------------------------------------------------------------
class VladAggregator(GlobalAggregator):
    """VLAD over a k-means codebook (see the module docstring)."""

    def __init__(self, num_words: int = 64, power: float = 0.5, intra_normalization: bool = True,
                 seed: int = 0, max_training_descriptors: int = 200_000, binary: bool = False):
        self.num_words = int(num_words)
        self.power = float(power)
        self.intra = bool(intra_normalization)
        self.seed = int(seed)
        self.max_training = int(max_training_descriptors)
        self.binary = bool(binary)

    def global_dim(self, local_dim: int) -> int:
        """Dimension of the descriptor for local descriptors of ``local_dim`` (float) dimensions."""
        return self.num_words * int(local_dim)

    def fit(self, descriptors: np.ndarray) -> np.ndarray:
        """k-means on descriptors (M, D) -> codebook (K, D) float32 (K <= M), seeded."""
        x = training_rows(descriptors, self.max_training, self.seed, self.binary, sort=False)
        if len(x) == 0:
            raise ValueError("Cannot fit a VLAD codebook: the train images gave no local descriptors")
        return kmeans(x, self.num_words, self.seed)

    def encode(self, descriptors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
        """VLAD of one image: descriptors (N, D) -> (K * D,) float32, unit norm (zeros if N == 0)."""
        k, dim = codebook.shape
        out = np.zeros((k, dim), np.float32)
        x = as_float_descriptors(descriptors, self.binary)
        if len(x):
            words = nearest_words(x, codebook)
            np.add.at(out, words, x - codebook[words])
            if self.intra:
                norms = np.linalg.norm(out, axis=1, keepdims=True)
                out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
        v = out.reshape(-1)
        v = np.sign(v) * np.abs(v) ** self.power
        n = np.linalg.norm(v)
        return (v / n if n > 0 else v).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Bag of words with tf-idf
# --------------------------------------------------------------------------------------------
class BowAggregator(GlobalAggregator):
    """Bag of visual words weighted by tf-idf (see the module docstring).

    The model is one array (K, D + 1) float32: the K words (columns ``:D``) and their idf
    (column ``D``). :meth:`fit` gives idf = 1 (plain term frequencies); :meth:`fit_documents`
    sets the idf from every train image.
    """

    needs_documents = True

    def __init__(self, num_words: int = 1024, seed: int = 0, max_training_descriptors: int = 100_000,
                 binary: bool = False):
        self.num_words = int(num_words)
        self.seed = int(seed)
        self.max_training = int(max_training_descriptors)
        self.binary = bool(binary)

    def global_dim(self, local_dim: int) -> int:
        return self.num_words

    def fit(self, descriptors: np.ndarray) -> np.ndarray:
        """k-means vocabulary of descriptors (M, D) -> model (K, D + 1) float32 with idf = 1."""
        x = training_rows(descriptors, self.max_training, self.seed, self.binary)
        if len(x) == 0:
            raise _no_descriptors("BoW vocabulary")
        words = kmeans(x, self.num_words, self.seed)
        return np.ascontiguousarray(np.hstack([words, np.ones((len(words), 1), np.float32)]), np.float32)

    def document_frequencies(self, model: np.ndarray, documents: Iterable[np.ndarray]) -> Tuple[np.ndarray, int]:
        """How many documents contain each word: (K,) int64, and the number of documents."""
        words = np.ascontiguousarray(model[:, :-1], np.float32)
        df = np.zeros(len(words), np.int64)
        n = 0
        for desc in documents:
            n += 1
            x = as_float_descriptors(desc, self.binary)
            if len(x):
                df[np.unique(nearest_words(x, words))] += 1
        return df, n

    def fit_documents(self, codebook: np.ndarray, documents: Iterable[np.ndarray]) -> np.ndarray:
        """Set the idf column from the train images' descriptors, one (N_i, D) array per image
        (every train image once; the counts do not depend on their order): idf = ln(N / df),
        0 where df = 0."""
        df, n = self.document_frequencies(codebook, documents)
        idf = np.zeros(len(df), np.float64)
        seen = df > 0
        idf[seen] = np.log(n / df[seen])
        model = np.array(codebook, np.float32, copy=True)
        model[:, -1] = idf.astype(np.float32)
        logger.info("BoW idf from %d train images: %d of %d words occur in them", n, int(seen.sum()), len(df))
        return model

    def term_counts(self, descriptors: np.ndarray, model: np.ndarray) -> np.ndarray:
        """Words counted in one image: descriptors (N, D) -> (K,) int64."""
        x = as_float_descriptors(descriptors, self.binary)
        words = np.ascontiguousarray(model[:, :-1], np.float32)
        return np.bincount(nearest_words(x, words), minlength=len(words)).astype(np.int64)

    def encode(self, descriptors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
        """tf-idf vector of one image: descriptors (N, D) -> (K,) float32, unit L2 (zeros if N == 0
        or only zero-idf words occur)."""
        counts = self.term_counts(descriptors, codebook).astype(np.float64)
        return _unit(counts * codebook[:, -1].astype(np.float64))


# --------------------------------------------------------------------------------------------
# Fisher vectors
# --------------------------------------------------------------------------------------------
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
            raise _no_descriptors("Fisher-vector GMM")
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
        return _unit(v)


# --------------------------------------------------------------------------------------------
# Colour histogram
# --------------------------------------------------------------------------------------------
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
    return _unit(counts)


class ColourDescriptor:
    """The ``colour`` global descriptor: an image function (see :func:`colour_histogram`)."""

    def __init__(self, space: str = "hsv", bins: Sequence[int] = (8, 8, 8), normalization: str = "hellinger"):
        self.space = space
        self.bins = tuple(int(v) for v in bins)
        self.normalization = normalization

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(prod(bins),) float32 unit descriptor of an RGB uint8 image."""
        return colour_histogram(image, self.space, self.bins, self.normalization)


ImageDescriptor = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GlobalDescriptorInfo:
    """One global descriptor of the classical backends."""

    name: str  # the value of extract.global_descriptor
    section: str  # the ExtractConfig section holding its settings
    # (extract settings, binary local descriptors?) -> a GlobalAggregator (from_image False) or an
    # image function RGB uint8 (H, W, 3) -> (G,) float32 (from_image True)
    factory: Callable[["ExtractConfig", bool], Union[GlobalAggregator, ImageDescriptor]]
    from_image: bool  # computed from the image in extract (no fitting), not from local descriptors
    description: str  # one line


def _vlad(conf: "ExtractConfig", binary: bool) -> GlobalAggregator:
    v = conf.vlad
    return VladAggregator(num_words=v.num_words, power=v.power, intra_normalization=v.intra_normalization,
                          seed=v.seed, max_training_descriptors=v.max_training_descriptors, binary=binary)


def _bow(conf: "ExtractConfig", binary: bool) -> GlobalAggregator:
    b = conf.bow
    return BowAggregator(num_words=b.num_words, seed=b.seed, max_training_descriptors=b.max_training_descriptors,
                         binary=binary)


def _fisher(conf: "ExtractConfig", binary: bool) -> GlobalAggregator:
    f = conf.fisher
    return FisherAggregator(num_components=f.num_components, pca_dim=f.pca_dim, power=f.power,
                            iterations=f.iterations, seed=f.seed, max_training_descriptors=f.max_training_descriptors,
                            binary=binary)


def _colour(conf: "ExtractConfig", binary: bool) -> ImageDescriptor:
    c = conf.colour
    return ColourDescriptor(c.space, c.bins, c.normalization)


GLOBAL_DESCRIPTORS: Dict[str, GlobalDescriptorInfo] = {
    "vlad": GlobalDescriptorInfo("vlad", "vlad", _vlad, False, "VLAD over a k-means codebook"),
    "bow": GlobalDescriptorInfo("bow", "bow", _bow, False, "bag of visual words, tf-idf weighted"),
    "fisher": GlobalDescriptorInfo("fisher", "fisher", _fisher, False, "Fisher vector over a diagonal GMM"),
    "colour": GlobalDescriptorInfo("colour", "colour", _colour, True, "joint colour histogram (HSV or Lab)"),
}

#: the global descriptor whose features are described without naming it (stores made before
#: extract.global_descriptor existed stay valid)
DEFAULT_GLOBAL = "vlad"


def global_descriptor_info(name: str) -> GlobalDescriptorInfo:
    """The registry entry of a global descriptor, or a ValueError listing the known ones."""
    try:
        return GLOBAL_DESCRIPTORS[name]
    except KeyError:
        raise ValueError(f"extract.global_descriptor: unknown global descriptor {name!r}; choose one of: "
                         f"{', '.join(GLOBAL_DESCRIPTORS)}") from None


def make_global(conf: "ExtractConfig", binary: bool = False
                ) -> Tuple[Optional[GlobalAggregator], Optional[ImageDescriptor]]:
    """The aggregator (descriptors from local ones) or the image function of
    ``conf.global_descriptor``; the other one is None. ``binary``: local descriptors are packed
    bits (ORB)."""
    info = global_descriptor_info(conf.global_descriptor)
    made = info.factory(conf, bool(binary))
    return (None, made) if info.from_image else (made, None)


def describe_global(description: dict, conf: "ExtractConfig") -> dict:
    """A classical backend's :meth:`~landmark_retrieval.backends.base.Backend.describe` with only
    the selected global descriptor's section, and its name unless it is the default (VLAD: the
    description is then what it was before the other global descriptors existed)."""
    out = dict(description)
    for info in GLOBAL_DESCRIPTORS.values():
        if info.name != conf.global_descriptor:
            out.pop(info.section, None)
    if conf.global_descriptor != DEFAULT_GLOBAL:
        out["global_descriptor"] = conf.global_descriptor
    return out


def validate_global(conf: "ExtractConfig") -> None:
    """Check ``extract.global_descriptor`` and its section (ValueErrors name the option)."""
    global_descriptor_info(conf.global_descriptor)
    for name in ("vlad.num_words", "bow.num_words", "fisher.num_components", "vlad.max_training_descriptors",
                 "bow.max_training_descriptors", "fisher.max_training_descriptors"):
        section, option = name.split(".")
        value = getattr(getattr(conf, section), option)
        if value < 1:
            raise ValueError(f"extract.{name}: expected a positive integer, got {value}")
    f = conf.fisher
    if f.pca_dim is not None and f.pca_dim < 1:
        raise ValueError(f"extract.fisher.pca_dim: expected a positive dimension (e.g. 64) or none, got {f.pca_dim}")
    if f.iterations < 0:
        raise ValueError(f"extract.fisher.iterations: expected 0 or more EM iterations, got {f.iterations}")
    if not (math.isfinite(f.power) and f.power > 0):
        raise ValueError(f"extract.fisher.power: expected a positive number (0.5 is usual), got {f.power}")
    c = conf.colour
    space, norm = str(c.space).strip().lower(), str(c.normalization).strip().lower()
    if space not in COLOUR_SPACES:
        raise ValueError(f"extract.colour.space: expected one of {', '.join(COLOUR_SPACES)}, got {c.space!r}")
    if norm not in COLOUR_NORMALIZATIONS:
        raise ValueError(f"extract.colour.normalization: expected one of {', '.join(COLOUR_NORMALIZATIONS)}, "
                         f"got {c.normalization!r}")
    if len(c.bins) != 3 or min(c.bins) < 1:
        raise ValueError(f"extract.colour.bins: expected three positive bin counts (H,S,V or L,a,b), e.g. 8,8,8, "
                         f"got {','.join(map(str, c.bins)) or 'nothing'}")
    c.space, c.normalization = space, norm
