"""Robust estimators of the verify step (landmark_retrieval.matching.geometry): DEGENSAC and MAGSAC++,
homography and fundamental matrix, on synthetic matches with known inliers."""
import numpy as np
import pytest

from landmark_retrieval.config import VerifyConfig
from landmark_retrieval.features import Features
from landmark_retrieval.matching.geometry import ESTIMATORS, GEOMETRIES, estimate_geometry
from landmark_retrieval.matching.pairs import verify_pair
from landmark_retrieval.presets import get_config
from landmark_retrieval.testing.two_view import (
    H_TRUE,
    epipolar_distance,
    planar_matches,
    true_fundamental,
    two_view_matches,
)
from landmark_retrieval.testing.two_view import project as _project
from landmark_retrieval.verify import verification_settings


def conf(estimator, geometry="homography", **kw):
    return VerifyConfig(estimator=estimator, geometry=geometry, **kw)


def test_synthetic_truth():
    p0, p1, truth = two_view_matches(noise=0.0)
    assert epipolar_distance(true_fundamental(), p0[truth], p1[truth]).max() < 1e-6
    assert epipolar_distance(true_fundamental(), p0[~truth], p1[~truth]).mean() > 10
    p0, p1, truth = planar_matches(noise=0.0)
    assert np.allclose(_project(H_TRUE, p0[truth]), p1[truth])


def test_registry():
    assert set(ESTIMATORS) >= {"degensac", "magsac"} and set(GEOMETRIES) == {"homography", "fundamental"}
    for est in ESTIMATORS.values():
        assert set(est.fits) <= set(GEOMETRIES)


@pytest.mark.parametrize("estimator", ["degensac", "magsac"])
def test_homography_recovered_with_outliers(estimator):
    p0, p1, truth = planar_matches()
    H, mask = estimate_geometry(p0, p1, conf(estimator))
    assert H is not None and H.shape == (3, 3) and mask.dtype == bool and mask.shape == (350,)
    grid = np.stack(np.meshgrid(np.linspace(0, 999, 6), np.linspace(0, 799, 6)), -1).reshape(-1, 2)
    assert np.abs(_project(H, grid) - _project(H_TRUE, grid)).max() < 1.5
    recall, precision = mask[truth].mean(), truth[mask].mean()
    assert recall >= 0.97 and precision >= 0.99, (recall, precision)


@pytest.mark.parametrize("estimator", ["degensac", "magsac"])
def test_fundamental_matrix_satisfies_the_epipolar_constraint(estimator):
    p0, p1, truth = two_view_matches()
    F, mask = estimate_geometry(p0, p1, conf(estimator, "fundamental"))
    assert F is not None and F.shape == (3, 3)
    assert abs(np.linalg.det(F / np.linalg.norm(F))) < 1e-6  # rank 2
    d = epipolar_distance(F, p0[truth], p1[truth])  # x1^T F x0 ~ 0 for the true inliers
    assert np.median(d) < 0.5 and np.percentile(d, 95) < 2.0, (np.median(d), np.percentile(d, 95))
    assert mask[truth].mean() >= 0.9 and mask[~truth].mean() <= 0.15
    # a homography cannot explain a 3-D scene seen from two places: fewer inliers
    _, hmask = estimate_geometry(p0, p1, conf(estimator, "homography"))
    assert hmask[truth].sum() < 0.8 * mask[truth].sum()


@pytest.mark.parametrize("estimator", ["degensac", "magsac"])
@pytest.mark.parametrize("geometry", ["homography", "fundamental"])
def test_estimators_are_deterministic(estimator, geometry):
    p0, p1, _ = (planar_matches if geometry == "homography" else two_view_matches)(seed=3, outliers=300)
    c = conf(estimator, geometry, seed=7)
    (m1, k1), (m2, k2) = estimate_geometry(p0, p1, c), estimate_geometry(p0, p1, c)
    assert m1 is not None and np.array_equal(m1, m2) and np.array_equal(k1, k2)


@pytest.mark.parametrize("estimator", ["degensac", "magsac"])
def test_too_few_matches_give_no_model(estimator):
    p0, p1, _ = two_view_matches(inliers=7, outliers=0)
    F, mask = estimate_geometry(p0, p1, conf(estimator, "fundamental", min_matches=5))
    assert F is None and mask.shape == (7,) and not mask.any()  # a fundamental matrix needs 8
    H, mask = estimate_geometry(p0[:4], p1[:4], conf(estimator, min_matches=5))
    assert H is None and not mask.any()
    H, mask = estimate_geometry(np.zeros((0, 2)), np.zeros((0, 2)), conf(estimator))
    assert H is None and mask.shape == (0,)


def test_default_is_the_unchanged_degensac_call():
    import pydegensac

    p0, p1, _ = planar_matches(seed=5, outliers=400)
    vc = get_config("kaggle-baseline").verify
    H, mask = estimate_geometry(p0, p1, vc)
    H0, m0 = pydegensac.findHomography(p0, p1, 4.0, 0.99, 1000, seed=0)
    assert np.array_equal(H, H0) and np.array_equal(mask, np.asarray(m0, bool))


def test_options_are_validated_and_stamped(tmp_path):
    with pytest.raises(ValueError, match=r"verify\.estimator.*ransac.*degensac, magsac"):
        get_config("default", ["verify.estimator=ransac"])
    with pytest.raises(ValueError, match=r"verify\.geometry.*affine"):
        get_config("default", ["verify.geometry=affine"])
    c = get_config("default", ["verify.estimator=magsac", "verify.geometry=fundamental"])
    assert (c.verify.estimator, c.verify.geometry) == ("magsac", "fundamental")
    # default values stay out of the stamp (results verified before these options stay current)
    assert not {"estimator", "geometry", "max_hamming_distance"} & set(verification_settings(VerifyConfig(), tmp_path))
    stamped = verification_settings(c.verify, tmp_path)
    assert stamped["estimator"] == "magsac" and stamped["geometry"] == "fundamental"


def test_verify_pair_with_a_fundamental_matrix():
    p0, p1, truth = two_view_matches(seed=2)
    n = len(p0)
    rng = np.random.default_rng(0)
    desc = rng.standard_normal((n, 16)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    ones = np.ones(n, np.float32)
    a = Features(p0.astype(np.float32), desc, ones, ones, (1000, 800))
    b = Features(p1.astype(np.float32), desc, ones, ones, (1000, 800))
    res = verify_pair(a, b, conf("magsac", "fundamental"))
    assert res.homography is None and res.fundamental is not None
    assert res.num_inliers >= 0.9 * truth.sum()
