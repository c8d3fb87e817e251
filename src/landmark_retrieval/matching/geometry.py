"""Robust two-view geometry of putative matches: the estimators of the verify step, registered in
one place (:data:`ESTIMATORS`).

``verify.estimator`` picks the robust estimator and ``verify.geometry`` the model whose inliers
are counted:

* ``degensac``: DEGENSAC (``pydegensac``, seeded by ``verify.seed``), the host baseline's;
* ``magsac``: OpenCV's USAC with MAGSAC++ scoring (``cv2.USAC_MAGSAC``: uniform sampling,
  sigma-consensus local optimisation, MAGSAC polishing); its random generator is seeded by
  ``verify.seed`` through ``cv2.UsacParams.randomGeneratorState`` (``cv2.setRNGSeed`` does not
  reach it), so results are reproducible;

* ``homography``: a plane (or a rotating camera), H (3, 3) with ``x1 ~ H x0``; at least 4 matches;
* ``fundamental``: any rigid 3-D scene, F (3, 3) with ``x1^T F x0 = 0``; at least 8 matches.
  It accepts more (wrong) matches than a homography at the same threshold: a point needs only
  to lie near its epipolar line.

Every estimator reads the same settings: ``max_reprojection_error`` (pixels: the transfer
error of a homography, the Sampson/epipolar distance of a fundamental matrix), ``confidence``,
``max_iterations`` and ``seed``. A new estimator is one function per geometry and one entry
here (or a call to :func:`register_estimator`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np

logger = logging.getLogger("landmark_retrieval")


#: geometry -> fewest matches its estimators accept (fewer give no model and 0 inliers)
GEOMETRIES: Dict[str, int] = {"homography": 4, "fundamental": 8}

#: ``fit(pts0, pts1, threshold, confidence, max_iterations, seed) -> (model or None, mask)``:
#: pts (K, 2) float64 contiguous; mask anything of K truthy/falsy values
FitFunction = Callable[[np.ndarray, np.ndarray, float, float, int, int], Tuple[Optional[np.ndarray], np.ndarray]]


@dataclass(frozen=True)
class Estimator:
    """A robust estimator: one fitting function per geometry it supports."""

    name: str  # the value of verify.estimator
    label: str  # for messages and plots, e.g. "DEGENSAC"
    fits: Mapping[str, FitFunction]  # geometry -> fitting function
    description: str = ""


# --------------------------------------------------------------------------------------------
# DEGENSAC (pydegensac)
# --------------------------------------------------------------------------------------------
def _degensac_homography(p0, p1, threshold, confidence, max_iterations, seed):
    import pydegensac

    return pydegensac.findHomography(p0, p1, float(threshold), float(confidence), int(max_iterations),
                                     seed=int(seed))


def _degensac_fundamental(p0, p1, threshold, confidence, max_iterations, seed):
    import pydegensac

    return pydegensac.findFundamentalMatrix(p0, p1, float(threshold), float(confidence), int(max_iterations),
                                            seed=int(seed))


# --------------------------------------------------------------------------------------------
# MAGSAC++ (OpenCV USAC)
# --------------------------------------------------------------------------------------------
def usac_params(threshold: float, confidence: float, max_iterations: int, seed: int):
    """``cv2.UsacParams`` of ``cv2.USAC_MAGSAC`` with our threshold, confidence, iterations and
    a seeded random generator (the only way to seed OpenCV's USAC)."""
    import cv2

    params = cv2.UsacParams()
    params.sampler = cv2.SAMPLING_UNIFORM
    params.score = cv2.SCORE_METHOD_MAGSAC
    params.loMethod = cv2.LOCAL_OPTIM_SIGMA
    params.final_polisher = cv2.MAGSAC
    params.isParallel = False
    params.threshold = float(threshold)
    params.confidence = float(confidence)
    params.maxIterations = int(max_iterations)
    params.randomGeneratorState = int(seed) & 0x7FFFFFFF
    return params


def _magsac_homography(p0, p1, threshold, confidence, max_iterations, seed):
    import cv2

    return cv2.findHomography(p0, p1, usac_params(threshold, confidence, max_iterations, seed))


def _magsac_fundamental(p0, p1, threshold, confidence, max_iterations, seed):
    import cv2

    return cv2.findFundamentalMat(p0, p1, usac_params(threshold, confidence, max_iterations, seed))


ESTIMATORS: Dict[str, Estimator] = {
    "degensac": Estimator("degensac", "DEGENSAC", {"homography": _degensac_homography,
                                                   "fundamental": _degensac_fundamental},
                          "pydegensac (the host baseline's), seeded"),
    "magsac": Estimator("magsac", "MAGSAC++", {"homography": _magsac_homography,
                                               "fundamental": _magsac_fundamental},
                        "OpenCV USAC MAGSAC++, seeded through UsacParams"),
}


def register_estimator(estimator: Estimator) -> None:
    """Add (or replace) an estimator; its geometries must be in :data:`GEOMETRIES`."""
    unknown = set(estimator.fits) - set(GEOMETRIES)
    if unknown:
        raise ValueError(f"Estimator {estimator.name!r} fits unknown geometries {sorted(unknown)}; "
                         f"known: {', '.join(GEOMETRIES)}")
    ESTIMATORS[estimator.name] = estimator


def validate_geometry_options(estimator: str, geometry: str) -> None:
    """Raise a ValueError naming ``verify.estimator``/``verify.geometry`` and the valid values."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"verify.estimator: unknown estimator {estimator!r}; choose one of: {', '.join(ESTIMATORS)}")
    if geometry not in ESTIMATORS[estimator].fits:
        raise ValueError(f"verify.geometry: the {estimator} estimator cannot fit {geometry!r}; choose one of: "
                         f"{', '.join(ESTIMATORS[estimator].fits)}")


def estimate_geometry(kpts0: np.ndarray, kpts1: np.ndarray, conf, geometry: Optional[str] = None,
                      estimator: Optional[str] = None) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """Robustly fit a model to matched points and return its inliers.

    Args:
        kpts0, kpts1: (K, 2) float (x, y) coordinates of the K putative matches.
        conf: verification settings (a :class:`~landmark_retrieval.config.VerifyConfig`:
            ``max_reprojection_error``, ``confidence``, ``max_iterations``, ``seed``,
            ``min_matches``, and ``estimator``/``geometry`` unless given here).
        geometry / estimator: override ``conf.geometry`` / ``conf.estimator``.

    Returns:
        ``(model, inlier_mask)``: model (3, 3) float64 (H mapping kpts0 to kpts1, or F with
        ``[x1, 1] F [x0, 1]^T = 0``), or None when there are fewer than ``max(min_matches,
        GEOMETRIES[geometry])`` matches, no model or an estimator error (logged); inlier_mask
        (K,) bool (all False without a model).

    Raises:
        ValueError: ``kpts0``/``kpts1`` are not (K, 2) arrays with the same K (shapes named), or
            an unknown estimator/geometry.
    """
    shape0, shape1 = np.shape(kpts0), np.shape(kpts1)
    if len(shape0) != 2 or shape0[1:] != (2,) or len(shape1) != 2 or shape1[1:] != (2,) or shape0[0] != shape1[0]:
        raise ValueError(f"estimate_geometry: kpts0 and kpts1 must be (K, 2) arrays of matched (x, y) points "
                         f"with the same K, got shapes {shape0} and {shape1}")
    geometry = geometry or getattr(conf, "geometry", "homography")
    name = estimator or getattr(conf, "estimator", "degensac")
    validate_geometry_options(name, geometry)
    est = ESTIMATORS[name]
    k = len(kpts0)
    mask = np.zeros(k, bool)
    if k < max(conf.min_matches, GEOMETRIES[geometry]):
        return None, mask
    try:
        model, inl = est.fits[geometry](
            np.ascontiguousarray(kpts0, np.float64), np.ascontiguousarray(kpts1, np.float64),
            float(conf.max_reprojection_error), float(conf.confidence), int(conf.max_iterations), int(conf.seed))
    except Exception as exc:  # pydegensac: LinAlgError/ValueError/RuntimeError; OpenCV: cv2.error
        logger.warning("%s (%s) failed on %d putative matches (counted as 0 inliers): %s: %s",
                       est.label, geometry, k, type(exc).__name__, exc)
        return None, mask
    if model is None or inl is None:
        return None, mask
    mask = np.asarray(inl, bool).reshape(-1)
    model = np.asarray(model, np.float64)
    if mask.shape[0] != k or model.shape != (3, 3):
        return None, np.zeros(k, bool)
    if not np.any(mask) or not np.all(np.isfinite(model)):
        return None, np.zeros(k, bool)
    return model, mask
