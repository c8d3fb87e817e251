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
(:func:`landmark_retrieval.backends.extraction.codebook_sample`; ``bow`` then counts document frequencies
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
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Optional, Tuple, Union

import numpy as np

from .base import GlobalAggregator
from .codebook import as_float_descriptors, kmeans, nearest_words, no_descriptors_error, training_rows, unit_vector
from .colour import COLOUR_NORMALIZATIONS, COLOUR_SPACES, ColourDescriptor
from .fisher import FisherAggregator

if TYPE_CHECKING:  # config imports this package lazily; no import cycle at run time
    from ..config import ExtractConfig

logger = logging.getLogger("landmark_retrieval")


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


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
            raise no_descriptors_error("BoW vocabulary")
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
        return unit_vector(counts * codebook[:, -1].astype(np.float64))


# --------------------------------------------------------------------------------------------
# Fisher vectors
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Colour histogram
# --------------------------------------------------------------------------------------------


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
