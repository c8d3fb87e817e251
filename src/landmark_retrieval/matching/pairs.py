"""Verification of one image pair: putative matches, then a robust geometric fit.

Putative matches are nearest neighbours of the first image's descriptors among the second's
(:func:`match_descriptors`: distance threshold, optional ratio test, mutual check, a cap), or
Hamming matches of binary descriptors (:func:`match_binary_descriptors`); the inliers come from
``verify.estimator`` / ``verify.geometry`` (:mod:`landmark_retrieval.matching.geometry`; default a
seeded DEGENSAC homography). Pure computation: no files, no processes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Tuple

import numpy as np

from ..config import VerifyConfig
from ..features import Features, is_binary
from .geometry import estimate_geometry, validate_geometry_options

if TYPE_CHECKING:
    pass
from ..io.store import strongest

logger = logging.getLogger("landmark_retrieval")



def _descriptor_array(x: object, name: str, where: str) -> np.ndarray:
    """``x`` as an array, or a TypeError naming ``where``'s argument ``name`` and what it takes."""
    if x is None or isinstance(x, (str, bytes, Mapping)):
        raise TypeError(f"{where}: {name} must be an (N, D) array of descriptors (float32, or uint8 packed bits), "
                        f"not {type(x).__name__}")
    array = np.asarray(x)
    if array.dtype == object:
        raise TypeError(f"{where}: {name} must be a numeric (N, D) array of descriptors, got an object array")
    return array


def check_verify_config(conf: object, where: str) -> None:
    """A TypeError naming ``where`` unless ``conf`` is a :class:`VerifyConfig`."""
    if not isinstance(conf, VerifyConfig):
        raise TypeError(f"{where}: conf must be a VerifyConfig (e.g. get_config(\"demo\").verify, or "
                        f"VerifyConfig(num_to_rerank=20)), not {type(conf).__name__}")



def match_descriptors(desc0: np.ndarray, desc1: np.ndarray, max_distance: float = 0.9,
                      ratio_test: Optional[float] = None, mutual: bool = False,
                      max_matches: Optional[int] = None, max_hamming_distance: int = 64) -> np.ndarray:
    """Nearest-neighbour matches from ``desc0`` to ``desc1`` (unit-norm rows).

    Binary descriptors (both uint8: packed bits, e.g. ORB) go to
    :func:`match_binary_descriptors` with ``max_hamming_distance`` instead of ``max_distance``.

    Each row of ``desc0`` is matched to its nearest row of ``desc1`` (the first one on a tie)
    when their Euclidean distance is below ``max_distance`` (and, if set, below ``ratio_test``
    times the distance to the second nearest, which is as close as the nearest on a tie; and,
    if ``mutual``, when the row is also the nearest the other way, the first one on a tie).
    With ``max_matches``, only that many of them are kept: the closest (ties: the lower i0).

    Similarities are one float32 product ``desc0 @ desc1.T`` and distances
    ``sqrt(max(2 - 2 * similarity, 0))`` in float32. The selection needs only row and column
    maxima (no sort, no column-wise argmax), and gives exactly the matches of the
    straightforward computation (``argmax``, ``np.partition``, ``argmax(axis=0)``) on that
    product; the product itself is most of the time (1000 x 1000 x 128: ~2.6 ms on one core).

    Args:
        desc0: (N0, D) float32 query descriptors; desc1: (N1, D) float32 candidate descriptors.
        max_distance: keep matches closer than this (L2 between unit descriptors).
        ratio_test: Lowe's ratio (e.g. 0.85); None = off. It cannot reject when N1 == 1.
        mutual: keep mutual nearest neighbours only.
        max_matches: keep at most this many matches (the closest); None = all.
        max_hamming_distance: binary descriptors only (see :func:`match_binary_descriptors`).

    Returns:
        (K, 2) int64 index pairs ``(i0, i1)``, ordered by i0.

    Raises:
        TypeError: a descriptor argument is not an array (None, a dict, ...), naming it.
        ValueError: the descriptors are not 2-D with the same D, or ``max_matches`` < 0, or
            one array is binary and the other not.
    """
    desc0 = _descriptor_array(desc0, "desc0", "match_descriptors")
    desc1 = _descriptor_array(desc1, "desc1", "match_descriptors")
    if max_matches is not None and max_matches < 0:
        raise ValueError(f"match_descriptors: max_matches must be >= 0 or None, got {max_matches}")
    if is_binary(desc0) or is_binary(desc1):
        return match_binary_descriptors(desc0, desc1, max_hamming_distance, ratio_test, mutual, max_matches)
    if len(desc0) == 0 or len(desc1) == 0:
        return np.zeros((0, 2), np.int64)
    d0, d1 = np.asarray(desc0, np.float32), np.asarray(desc1, np.float32)
    if d0.ndim != 2 or d1.ndim != 2 or d0.shape[1] != d1.shape[1]:
        raise ValueError(f"match_descriptors: desc0 and desc1 must be (N, D) arrays with the same D, "
                         f"got shapes {d0.shape} and {d1.shape}")
    return _select_matches(d0 @ d1.T, max_distance, ratio_test, mutual, max_matches)


def _select_matches(sim: np.ndarray, max_distance: float, ratio_test: Optional[float], mutual: bool,
                    max_matches: Optional[int]) -> np.ndarray:
    """The matches of :func:`match_descriptors` from the (N0, N1) float32 similarity matrix.

    ``sim`` is used as scratch space (entries are set to -inf and restored).
    """
    n0, n1 = sim.shape
    rows = np.arange(n0)
    nn = sim.argmax(axis=1)
    best = sim[rows, nn]
    dist = np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0))
    keep = dist < max_distance
    if ratio_test is not None and n1 >= 2 and keep.any():
        # the second largest similarity of each row, equal to the largest on a tie (what
        # np.partition(sim, n1 - 2, axis=1)[:, n1 - 2] gives): the maximum without the argmax
        sim[rows, nn] = -np.inf
        second = sim.max(axis=1)
        sim[rows, nn] = best
        dist2 = np.sqrt(np.maximum(2.0 - 2.0 * second, 0.0))
        keep &= dist < ratio_test * dist2
    if mutual and keep.any() and 4 * np.count_nonzero(keep) <= n1:
        # few rows left (after a ratio test): the argmax of just their columns, gathered as rows
        idx = np.flatnonzero(keep)
        keep[idx] = sim.T[nn[idx]].argmax(axis=1) == idx
    elif mutual and keep.any():
        # row i is the first argmax of its column j = nn[i] when sim[i, j] is the column's
        # maximum and no other row reaches it (else: the first row that reaches it); two
        # vectorised column maxima instead of a (much slower) column-wise argmax
        idx = np.flatnonzero(keep)
        cols = nn[idx]
        colmax = sim.max(axis=0)
        top = best[idx] == colmax[cols]
        ci, cj = idx[top], cols[top]
        sim[ci, cj] = -np.inf
        rest = sim.max(axis=0)[cj]
        sim[ci, cj] = best[ci]
        first = (rest < colmax[cj]) & (np.bincount(cj, minlength=n1)[cj] == 1)
        if not first.all():  # ties at a column's maximum (duplicated descriptors): rare
            tied = ~first
            ucols, inv = np.unique(cj[tied], return_inverse=True)
            first[tied] = sim[:, ucols].argmax(axis=0)[inv] == ci[tied]
        keep[:] = False
        keep[ci[first]] = True
    i0 = np.flatnonzero(keep)
    if max_matches is not None and len(i0) > max_matches:
        closest = np.argsort(-best[i0], kind="stable")[:max_matches]  # most similar; ties: lower i0
        i0 = np.sort(i0[closest])
    return np.stack([i0, nn[i0]], axis=1).astype(np.int64)


def match_binary_descriptors(desc0: np.ndarray, desc1: np.ndarray, max_distance: int = 64,
                             ratio_test: Optional[float] = None, mutual: bool = False,
                             max_matches: Optional[int] = None) -> np.ndarray:
    """Nearest-neighbour matches between binary descriptors by Hamming distance.

    The rules of :func:`match_descriptors`, with Hamming distances (bits that differ) from
    OpenCV's brute-force matcher (``cv2.BFMatcher(cv2.NORM_HAMMING)``; ``knnMatch`` with k=2 for
    the ratio test): each row of ``desc0`` is matched to its nearest row of ``desc1`` (the first
    one on a tie) when they differ in at most ``max_distance`` bits (and, if set, in fewer than
    ``ratio_test`` times the bits of the second nearest, which is as close as the nearest on a
    tie; and, if ``mutual``, when the row is also the nearest the other way, the first one on a
    tie). With ``max_matches``, only the closest that many are kept (ties: the lower i0).

    Args:
        desc0: (N0, B) uint8 packed bits (ORB: B = 32, 256 bits); desc1: (N1, B) uint8.
        max_distance: keep matches that differ in at most this many bits.
        ratio_test: Lowe's ratio (e.g. 0.8); None = off. It cannot reject when N1 == 1.
        mutual: keep mutual nearest neighbours only.
        max_matches: keep at most this many matches (the closest); None = all.

    Returns:
        (K, 2) int64 index pairs ``(i0, i1)``, ordered by i0.

    Raises:
        ValueError: the descriptors are not 2-D uint8 arrays with the same B, or ``max_matches`` < 0.
    """
    desc0 = _descriptor_array(desc0, "desc0", "match_binary_descriptors")
    desc1 = _descriptor_array(desc1, "desc1", "match_binary_descriptors")
    if max_matches is not None and max_matches < 0:
        raise ValueError(f"match_binary_descriptors: max_matches must be >= 0 or None, got {max_matches}")
    d0, d1 = np.asarray(desc0), np.asarray(desc1)
    if d0.ndim != 2 or d1.ndim != 2 or d0.shape[1] != d1.shape[1] or d0.dtype != np.uint8 or d1.dtype != np.uint8:
        raise ValueError(f"match_binary_descriptors: desc0 and desc1 must be (N, B) uint8 arrays of packed bits "
                         f"with the same B, got {d0.dtype} {d0.shape} and {d1.dtype} {d1.shape} (float "
                         "descriptors cannot be matched with binary ones: extract both with the same backend)")
    n0, n1 = len(d0), len(d1)
    if n0 == 0 or n1 == 0:
        return np.zeros((0, 2), np.int64)
    import cv2

    d0, d1 = np.ascontiguousarray(d0), np.ascontiguousarray(d1)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    nn = np.zeros(n0, np.int64)
    dist = np.full(n0, np.inf)
    second = np.full(n0, np.inf)  # distance to the second nearest (inf: none)
    if ratio_test is not None and n1 >= 2:
        for knn in matcher.knnMatch(d0, d1, k=2):
            i = knn[0].queryIdx
            nn[i], dist[i] = knn[0].trainIdx, knn[0].distance
            if len(knn) > 1:
                second[i] = knn[1].distance
    else:
        for m in matcher.match(d0, d1):
            nn[m.queryIdx], dist[m.queryIdx] = m.trainIdx, m.distance
    keep = dist <= max_distance
    if ratio_test is not None and n1 >= 2:
        keep &= dist < ratio_test * second
    if mutual and keep.any():
        # the nearest row of desc0 of every column that some kept row chose (those columns only)
        cols = np.unique(nn[keep])
        back = np.full(n1, -1, np.int64)
        for m in matcher.match(np.ascontiguousarray(d1[cols]), d0):
            back[cols[m.queryIdx]] = m.trainIdx
        keep &= back[nn] == np.arange(n0)
    i0 = np.flatnonzero(keep)
    if max_matches is not None and len(i0) > max_matches:
        closest = np.argsort(dist[i0], kind="stable")[:max_matches]  # closest; ties: lower i0
        i0 = np.sort(i0[closest])
    return np.stack([i0, nn[i0]], axis=1).astype(np.int64)


def estimate_homography(kpts0: np.ndarray, kpts1: np.ndarray, conf: VerifyConfig,
                        ) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """Homography between matched points with ``conf.estimator`` (DEGENSAC by default).

    Args:
        kpts0, kpts1: (K, 2) float (x, y) coordinates of the K putative matches.
        conf: verification settings (estimator, threshold, confidence, iterations, seed, min_matches).

    Returns:
        ``(H, inlier_mask)``: H (3, 3) float64 mapping kpts0 to kpts1, or None when there are
        too few matches, no model or an estimator error; inlier_mask (K,) bool.

    Raises:
        TypeError: ``conf`` is not a VerifyConfig, or a point argument is not an array (named).
        ValueError: ``kpts0``/``kpts1`` are not (K, 2) arrays with the same K (shapes named).
    """
    check_verify_config(conf, "estimate_homography")
    for name, points in (("kpts0", kpts0), ("kpts1", kpts1)):
        if points is None or isinstance(points, (str, bytes, Mapping)):
            raise TypeError(f"estimate_homography: {name} must be a (K, 2) array of (x, y) points, "
                            f"not {type(points).__name__}")
    shape0, shape1 = np.shape(kpts0), np.shape(kpts1)
    if len(shape0) != 2 or shape0[1:] != (2,) or len(shape1) != 2 or shape1[1:] != (2,) or shape0[0] != shape1[0]:
        raise ValueError(f"estimate_homography: kpts0 and kpts1 must be (K, 2) arrays of matched (x, y) points "
                         f"with the same K, got shapes {shape0} and {shape1}")
    return estimate_geometry(kpts0, kpts1, conf, geometry="homography")


@dataclass
class PairResult:
    """Verification of one image pair."""

    matches: np.ndarray  # (K, 2) int64 indices into (features0, features1)
    inlier_mask: np.ndarray  # (K,) bool
    homography: Optional[np.ndarray]  # (3, 3) mapping image0 (x, y) to image1, or None
    fundamental: Optional[np.ndarray] = None  # (3, 3) F, [x1, 1] F [x0, 1]^T = 0 (verify.geometry=fundamental)

    @property
    def num_inliers(self) -> int:
        return int(self.inlier_mask.sum())


def validate_verify(v: VerifyConfig) -> None:
    """Check the ``verify`` options: the matcher, the positive limits, the estimator and geometry."""
    if v.matcher not in ("nn", "lightglue"):
        raise ValueError(f"verify.matcher: expected nn or lightglue, got {v.matcher!r}")
    for key, value in (("max_keypoints", v.max_keypoints), ("max_matches", v.max_matches),
                       ("lightglue.accept_nn_inliers", v.lightglue.accept_nn_inliers)):
        if value is not None and value < 1:
            raise ValueError(f"verify.{key}: expected a positive integer or none, got {value}")
    validate_geometry_options(v.estimator, v.geometry)


def verify_pair(feats0: Features, feats1: Features, conf: VerifyConfig,
                matcher: Optional[Callable[..., np.ndarray]] = None) -> PairResult:
    """Match two images' local features and count the inliers of a robust fit.

    Putative matches come from :func:`match_descriptors` with the settings of ``conf``
    (``max_descriptor_distance``, or ``max_hamming_distance`` for binary descriptors;
    ``ratio_test``, ``mutual``, ``max_matches``), or with ``conf.matcher = "lightglue"`` from
    ``matcher`` (a :class:`landmark_retrieval.matching.lightglue.LightGlueMatcher` for the features'
    backend, which also reads their image sizes; with ``conf.lightglue.accept_nn_inliers`` a
    nearest-neighbour pass first, and LightGlue only when it finds fewer inliers); fewer than
    ``conf.min_matches`` give 0 inliers without running the estimator. The model is
    ``conf.geometry`` fitted by ``conf.estimator``
    (:func:`landmark_retrieval.matching.geometry.estimate_geometry`; default: a DEGENSAC homography).
    With ``conf.max_keypoints``, only each image's strongest that many features are matched
    (:func:`landmark_retrieval.io.store.strongest`); ``matches`` index the features as given.

    Raises:
        TypeError: ``feats0``/``feats1`` are not features or ``conf`` is not a VerifyConfig (named).
        ValueError: ``conf.matcher`` is lightglue and no ``matcher`` is given.
    """
    check_verify_config(conf, "verify_pair")
    for name, feats in (("feats0", feats0), ("feats1", feats1)):
        if not (hasattr(feats, "keypoints") and hasattr(feats, "descriptors")):
            raise TypeError(f"verify_pair: {name} must be Features (keypoints, descriptors, ...: e.g. a "
                            f"FeatureStore's .local(id) or a backend's .extract(image)), not {type(feats).__name__}")
    if conf.max_keypoints is not None:
        return _verify_strongest(feats0, feats1, conf, matcher)
    if conf.matcher != "lightglue":
        matches = match_descriptors(feats0.descriptors, feats1.descriptors, conf.max_descriptor_distance,
                                    conf.ratio_test, conf.mutual, conf.max_matches, conf.max_hamming_distance)
        return _fit(feats0, feats1, matches, conf)
    if matcher is None:
        raise ValueError("verify.matcher=lightglue: pass matcher=LightGlueMatcher(backend, conf.lightglue) "
                         "(landmark_retrieval.matching.lightglue) for the features' backend")
    first = None
    if conf.lightglue.accept_nn_inliers is not None:  # the cheap pass; confident pairs skip LightGlue
        first = verify_pair(feats0, feats1, replace(conf, matcher="nn"))
        if first.num_inliers >= conf.lightglue.accept_nn_inliers:
            return first
    matches = matcher(feats0.keypoints, feats0.descriptors, feats0.image_size,
                      feats1.keypoints, feats1.descriptors, feats1.image_size)
    res = _fit(feats0, feats1, matches, conf)
    return first if first is not None and first.num_inliers > res.num_inliers else res


def _fit(feats0: Features, feats1: Features, matches: np.ndarray, conf: VerifyConfig) -> PairResult:
    """The ``conf.geometry`` model of the putative ``matches`` (int (M, 2)) fitted by ``conf.estimator``."""
    model, mask = estimate_geometry(feats0.keypoints[matches[:, 0]], feats1.keypoints[matches[:, 1]], conf)
    if conf.geometry == "fundamental":
        return PairResult(matches, mask, None, model)
    return PairResult(matches, mask, model)


def _verify_strongest(feats0: Features, feats1: Features, conf: VerifyConfig,
                      matcher: Optional[Callable[..., np.ndarray]] = None) -> PairResult:
    """:func:`verify_pair` on each image's ``conf.max_keypoints`` strongest features, with the
    match indices mapped back to the features as given."""
    keep0, keep1 = (strongest(f.scores, conf.max_keypoints) for f in (feats0, feats1))
    res = verify_pair(feats0.rows(keep0), feats1.rows(keep1), replace(conf, max_keypoints=None), matcher)
    res.matches = np.stack([keep0[res.matches[:, 0]], keep1[res.matches[:, 1]]], axis=1)
    return res
