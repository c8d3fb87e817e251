"""ASMK*: the aggregated selective match kernel over binarised residuals, with its inverted file
(``retrieve.index=asmk``, registered in :data:`landmark_retrieval.search.SEARCHERS`).

Tolias, Avrithis and Jégou (ICCV 2013; IJCV 2016): the strongest weight-free aggregation of local
descriptors for instance retrieval. Each image becomes, for every visual word its descriptors fall
in, the sign bits of the sum of their residuals to that word (``D`` bits per word); two images are
compared word by word, only on the words they share:

    K(X, Y) = g(X) g(Y) sum_c idf(c) s(u_c),   u_c = 1 - 2 hamming(b_X(c), b_Y(c)) / D,
    s(u) = u ** alpha if u > threshold else 0,  g(X) = (sum_{c in X} idf(c)) ** -1/2,

so self-similarity is 1 and scores lie in [0, 1] (plus ``global_weight`` times the cosine of the
run's global descriptors when fused: e.g. a CNN's through an ensemble whose local features are
RootSIFT); ``idf(c) = log(N / n_c)`` over the ``N`` database images, ``n_c`` of which hold word
``c``. Query descriptors are assigned to their ``query_assignments`` nearest words (multiple
assignment), database ones to the nearest.

The searcher reads the run's **local** descriptors (RootSIFT, or learned ones: any float
descriptors) from the feature store; the global descriptors only for fusion. The codebook is learned
by seeded k-means (:func:`landmark_retrieval.backends.codebook.kmeans`) on a seeded sample of the
database's descriptors; codebook and database codes are saved in ``WORK/features/<database>/asmk.h5``
with a stamp of
what they were computed from, and reused. Results depend only on the descriptors and the options:
never on worker counts or read order (images in database order, words sorted).

Memory: the database codes, ``D / 8`` bytes per (image, word) (RootSIFT, 1,024 words: ~10 KB per
image), plus the inverted file's row index.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import h5py
import numpy as np

from ..backends.codebook import kmeans, training_rows
from ..io.atomic import publish, write_error
from ..io.layout import feature_dir, fingerprint, stamp_changes, write_stamp
from ..io.progress import progress
from ..io.store import FeatureStore
from .exact import SearchContext, row_blocks, sort_rows

logger = logging.getLogger("landmark_retrieval")

#: entries of the inverted file scored at once per query (memory: ~D/8 + 16 bytes each)
CHUNK = 1 << 21
#: queries whose global similarities (retrieve.asmk.global_weight) are computed at once
QUERY_BLOCK = 256


@dataclass
class AsmkCodes:
    """Binarised aggregated residuals of N images.

    Attributes:
        words: (M,) int32 visual word of each row, ascending within an image.
        codes: (M, D/8) uint8 packed sign bits of the summed residuals.
        offsets: (N + 1,) int64: image i owns rows ``offsets[i]:offsets[i + 1]``.
    """

    words: np.ndarray
    codes: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def image_rows(self) -> np.ndarray:
        """(M,) int64 image index of every row."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))


def nearest_k_words(x: np.ndarray, codebook: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest codebook rows of each descriptor: x (N, D), codebook (K, D) float32 ->
    (N, min(k, K)) int64, nearest first (ties: the lower word)."""
    k = min(int(k), len(codebook))
    if len(x) == 0:
        return np.zeros((0, k), np.int64)
    d2 = (codebook * codebook).sum(1)[None] - 2.0 * x @ codebook.T
    order = np.argsort(d2, axis=1, kind="stable")
    return order[:, :k].astype(np.int64)


def aggregate(descriptors: np.ndarray, codebook: np.ndarray, assignments: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """One image's ASMK* representation.

    Args:
        descriptors: (n, D) float32 local descriptors (none: any (0, k) array).
        codebook: (K, D) float32 visual words.
        assignments: words each descriptor is assigned to (1 for the database, more for queries).

    Returns:
        ``(words, codes)``: (m,) int32 ascending distinct words and (m, ceil(D/8)) uint8 packed
        bits, bit = 1 where the sum of the residuals to the word is positive.
    """
    x = np.ascontiguousarray(descriptors, np.float32)
    d = codebook.shape[1]
    if len(x) == 0:
        return np.zeros(0, np.int32), np.zeros((0, (d + 7) // 8), np.uint8)
    nearest = nearest_k_words(x, codebook, assignments)
    words = nearest.reshape(-1)
    rows = np.repeat(np.arange(len(x)), nearest.shape[1])
    residuals = x[rows] - codebook[words]
    distinct, inverse = np.unique(words, return_inverse=True)
    sums = np.zeros((len(distinct), d), np.float64)
    np.add.at(sums, inverse, residuals)
    return distinct.astype(np.int32), np.packbits(sums > 0, axis=1)


def idf_weights(codes: AsmkCodes, num_words: int) -> np.ndarray:
    """(K,) float64 ``log(N / n_c)`` (0 for words no database image holds)."""
    df = np.bincount(codes.words, minlength=num_words).astype(np.float64)
    out = np.zeros(num_words, np.float64)
    seen = df > 0
    out[seen] = np.log(len(codes) / df[seen])
    return out


def self_norms(codes: AsmkCodes, idf: np.ndarray) -> np.ndarray:
    """(N,) float64 ``g(X) = (sum of the idf of X's words) ** -1/2`` (0 for no words)."""
    total = np.bincount(codes.image_rows(), weights=idf[codes.words], minlength=len(codes))
    out = np.zeros(len(codes), np.float64)
    out[total > 0] = total[total > 0] ** -0.5
    return out


class InvertedFile:
    """The database's codes grouped by word, for :meth:`search`."""

    def __init__(self, codes: AsmkCodes, num_words: int, dim: int, alpha: float, threshold: float):
        order = np.argsort(codes.words, kind="stable")
        self.images = codes.image_rows()[order]
        self.codes = codes.codes[order]
        self.start = np.searchsorted(codes.words[order], np.arange(num_words + 1)).astype(np.int64)
        self.idf = idf_weights(codes, num_words)
        self.norms = self_norms(codes, self.idf)
        self.dim = int(dim)  # descriptor dimension: bits per code (the packing pads with zeros)
        self.alpha, self.threshold = float(alpha), float(threshold)
        self.size = len(codes)

    def scores(self, words: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(N,) float64 K(query, image) of one query's ``words`` (m,) and ``codes`` (m, B)."""
        out = np.zeros(self.size, np.float64)
        if len(words) == 0:
            return out
        q_norm = self.idf[words].sum()
        if q_norm <= 0:
            return out
        lengths = self.start[words + 1] - self.start[words]
        ends = np.cumsum(lengths)
        begin = 0
        while begin < len(words):  # groups of words holding at most CHUNK entries
            end = max(begin + 1, int(np.searchsorted(ends, (ends[begin - 1] if begin else 0) + CHUNK, "right")))
            sel = np.arange(begin, end)
            n = lengths[sel]
            if n.sum():
                rows = np.repeat(self.start[words[sel]] - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + \
                    np.arange(n.sum())
                query = np.repeat(sel, n)
                hamming = np.bitwise_count(self.codes[rows] ^ codes[query]).sum(axis=1, dtype=np.int64)
                u = 1.0 - 2.0 * hamming / self.dim
                selective = np.where(u > self.threshold, np.sign(u) * np.abs(u) ** self.alpha, 0.0)
                kernel = selective * self.idf[words[query]]
                out += np.bincount(self.images[rows], weights=kernel, minlength=self.size)
            begin = end
        return out * self.norms * q_norm ** -0.5


def _read_descriptors(store: FeatureStore, image_id: str, max_keypoints: Optional[int]) -> np.ndarray:
    if not store.has_local(image_id):
        return np.zeros((0, 0), np.float32)
    return store.local_points(image_id, max_keypoints)[1]


def _encode(store: FeatureStore, ids: Sequence[str], codebook: np.ndarray, assignments: int,
            max_keypoints: Optional[int], what: str) -> AsmkCodes:
    words, codes, offsets = [], [], [0]
    for image_id in progress(ids, desc=what, unit="img"):
        w, c = aggregate(_read_descriptors(store, image_id, max_keypoints), codebook, assignments)
        words.append(w)
        codes.append(c)
        offsets.append(offsets[-1] + len(w))
    nbytes = (codebook.shape[1] + 7) // 8
    return AsmkCodes(np.concatenate(words) if words else np.zeros(0, np.int32),
                     np.concatenate(codes) if codes else np.zeros((0, nbytes), np.uint8),
                     np.asarray(offsets, np.int64))


def _training(store: FeatureStore, ids: Sequence[str], opts: Any) -> np.ndarray:
    """A seeded sample of at most ``opts.max_training_descriptors`` database descriptors, drawn
    image by image in database order (the same sample whatever wrote the store)."""
    per_image = max(1, int(opts.max_training_descriptors) // max(1, len(ids)))
    rng = np.random.default_rng(int(opts.seed))
    parts = []
    for image_id in ids:
        d = _read_descriptors(store, image_id, opts.max_keypoints)
        if d.size == 0:
            continue
        if d.dtype == np.uint8:
            raise ValueError("retrieve.index=asmk needs float local descriptors (RootSIFT, DELG, XFeat, DISK, "
                             "ALIKED); these are binary (ORB): use another backend or retrieve.index=exact")
        keep = np.sort(rng.choice(len(d), per_image, replace=False)) if len(d) > per_image else np.arange(len(d))
        parts.append(d[keep])
    if not parts:
        raise ValueError("retrieve.index=asmk: no database image has local features to learn the codebook from "
                         "(extract.train_local=all extracts them for every database image)")
    return training_rows(np.concatenate(parts), int(opts.max_training_descriptors), int(opts.seed))


def _save(path: Path, codebook: np.ndarray, codes: AsmkCodes, settings: Dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(tmp, "w") as f:
            f.create_dataset("codebook", data=codebook)
            f.create_dataset("words", data=codes.words)
            f.create_dataset("codes", data=codes.codes)
            f.create_dataset("offsets", data=codes.offsets)
        publish(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc
    write_stamp(path, settings)


def _load(path: Path) -> Optional[Tuple[np.ndarray, AsmkCodes]]:
    try:
        with h5py.File(path, "r") as f:
            return f["codebook"][()], AsmkCodes(f["words"][()], f["codes"][()], f["offsets"][()])
    except (OSError, KeyError) as exc:
        logger.warning("Building the ASMK index again: %s is unreadable (%s)", path, exc)
        return None


def database_codes(ctx: SearchContext) -> Tuple[np.ndarray, AsmkCodes]:
    """``(codebook (K, D) float32, database codes)``: read from ``asmk.h5`` when computed from
    the same database with the same options, else learned, encoded and saved."""
    opts = ctx.conf.asmk
    search_time = ("alpha", "threshold", "query_assignments", "global_weight")
    build = {k: v for k, v in vars(opts).items() if k not in search_time}
    settings = {"index": "asmk", "build": build, "database": fingerprint(ctx.database_key),
                "db_ids": fingerprint(list(ctx.db_ids))}
    path = ctx.index_path("asmk") if ctx.index_path else None
    if path is not None and stamp_changes(path, settings) is None:
        loaded = _load(path)
        if loaded is not None:
            logger.info("Reusing the ASMK index %s", path)
            return loaded
    with FeatureStore(feature_dir(ctx.work, ctx.db_split)) as store:
        sample = _training(store, ctx.db_ids, opts)
        logger.info("ASMK: learning %d visual words from %d database descriptors", opts.num_words, len(sample))
        codebook = kmeans(sample, int(opts.num_words), int(opts.seed), int(opts.iterations))
        codes = _encode(store, ctx.db_ids, codebook, 1, opts.max_keypoints, "ASMK database")
    missing = int((np.diff(codes.offsets) == 0).sum())
    if missing:
        logger.warning("ASMK: %d of %d database images have no local features: they are found only by chance",
                       missing, len(codes))
    if path is not None:
        _save(path, codebook, codes, settings)
    return codebook, codes


def asmk_search(queries: np.ndarray, database: Any, k: int, ctx: SearchContext) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k database images of each test image by the ASMK* kernel (see the module docstring)
    plus ``retrieve.asmk.global_weight`` times the cosine of the run's global descriptors
    (``queries`` (Q, G), ``database`` (N, G): a CNN's, for score-level fusion; not read at 0).

    Returns:
        ``scores`` (Q, k') float32 descending in [0, 1] and ``indices`` (Q, k') int64, k' = min(k, N);
        ties: the lower database row first.
    """
    if ctx.work is None:
        raise ValueError("retrieve.index=asmk reads the run's local features: it needs the work directory")
    n = len(ctx.db_ids)
    kk = min(int(k), n)
    if len(ctx.query_ids) == 0 or kk == 0:
        return np.zeros((len(ctx.query_ids), kk), np.float32), np.zeros((len(ctx.query_ids), kk), np.int64)
    opts = ctx.conf.asmk
    codebook, codes = database_codes(ctx)
    ivf = InvertedFile(codes, len(codebook), codebook.shape[1], opts.alpha, opts.threshold)
    scores = np.zeros((len(ctx.query_ids), kk), np.float32)
    indices = np.zeros((len(ctx.query_ids), kk), np.int64)
    weight = float(opts.global_weight)
    with FeatureStore(feature_dir(ctx.work, "test")) as store:
        for start in range(0, len(ctx.query_ids), QUERY_BLOCK):
            ids = ctx.query_ids[start:start + QUERY_BLOCK]
            cosine = _cosines(queries[start:start + len(ids)], database) if weight else None
            for j, image_id in enumerate(progress(ids, desc="ASMK search", unit="img")):
                words, qcodes = aggregate(_read_descriptors(store, image_id, opts.max_keypoints), codebook,
                                          int(opts.query_assignments))
                s = ivf.scores(words, qcodes)
                if cosine is not None:
                    s = s + weight * cosine[j]
                top = _top(s, kk)
                scores[start + j], indices[start + j] = s[top], top
    return sort_rows(scores, indices)


def _cosines(queries: np.ndarray, database: Any) -> np.ndarray:
    """(Q, N) float64 inner products of a block of global descriptors with the whole database
    (an array or a DiskMatrix read in blocks)."""
    q = np.asarray(queries, np.float64)
    out = np.zeros((len(q), database.shape[0]), np.float64)
    for begin, block in row_blocks(database, 65536):
        out[:, begin:begin + len(block)] = q @ np.asarray(block, np.float64).T
    return out


def _top(s: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest of ``s`` (ties: the lower index), in no particular order."""
    if k >= len(s):
        return np.arange(len(s))
    cut = np.partition(-s, k - 1)[k - 1]  # the k-th largest, negated
    above = np.flatnonzero(-s < cut)
    tied = np.flatnonzero(-s == cut)[:k - len(above)]
    return np.concatenate([above, tied])
