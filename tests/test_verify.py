import numpy as np
import pytest

from landmark_retrieval.backends.base import Features
from landmark_retrieval.config import VerifyConfig, get_config
from landmark_retrieval.verify import estimate_homography, match_descriptors, verify_pair

E = np.eye(4, dtype=np.float32)


def unit_rows(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_match_descriptors_hand_computed():
    d0 = np.stack([E[0], E[1], E[2]])
    d1 = np.stack([E[1], unit_rows(np.array([[0.8, 0, 0, 0.6]]))[0], E[3]])
    # d0[0] -> d1[1] at distance sqrt(2 - 1.6) = 0.632; d0[1] -> d1[0] at 0; d0[2] is 1.414 from all
    m = match_descriptors(d0, d1, max_distance=0.9)
    assert m.tolist() == [[0, 1], [1, 0]]
    assert match_descriptors(d0, d1, max_distance=0.5).tolist() == [[1, 0]]
    assert m.dtype == np.int64


def test_match_descriptors_ratio_and_mutual():
    d1 = unit_rows(np.array([[1, 0.05, 0, 0], [1, -0.05, 0, 0], [0, 0, 1, 0]], np.float32))
    d0 = unit_rows(np.array([[1, 0, 0, 0], [0, 0, 1, 0.1]], np.float32))
    # d0[0] is equidistant to d1[0] and d1[1]: the ratio test rejects it
    assert match_descriptors(d0, d1, 1.0, ratio_test=0.8).tolist() == [[1, 2]]
    assert match_descriptors(d0, d1, 1.0).tolist() == [[0, 0], [1, 2]]
    # two queries with the same nearest neighbour: mutual keeps the closer one
    q = unit_rows(np.array([[0, 0, 1, 0.01], [0, 0, 1, 0.3]], np.float32))
    assert match_descriptors(q, d1, 1.0, mutual=True).tolist() == [[0, 2]]
    assert match_descriptors(q, d1, 1.0).tolist() == [[0, 2], [1, 2]]


@pytest.mark.parametrize("n0, n1", [(0, 5), (5, 0), (0, 0)])
def test_match_descriptors_empty(n0, n1):
    m = match_descriptors(np.zeros((n0, 128), np.float32), np.zeros((n1, 128), np.float32), ratio_test=0.8, mutual=True)
    assert m.shape == (0, 2)


def _project(H, pts):
    p = np.c_[pts, np.ones(len(pts))] @ H.T
    return p[:, :2] / p[:, 2:]


def test_homography_recovers_inliers_and_model(rng):
    H = np.array([[0.9, 0.1, 20.0], [-0.05, 1.1, -10.0], [1e-4, 5e-5, 1.0]])
    a = rng.uniform(0, 640, (300, 2))
    b = _project(H, a)
    outliers = rng.choice(300, 90, replace=False)
    b[outliers] = rng.uniform(0, 640, (90, 2))
    est, mask = estimate_homography(a, b, VerifyConfig(max_reprojection_error=2.0, max_iterations=2000))
    truth = np.ones(300, bool)
    truth[outliers] = False
    assert (mask == truth).mean() > 0.98
    assert np.abs(_project(est, a[truth]) - b[truth]).max() < 1.0
    # seeded: the same input gives the same answer
    est2, mask2 = estimate_homography(a, b, VerifyConfig(max_reprojection_error=2.0, max_iterations=2000))
    assert np.array_equal(mask, mask2)


def test_four_or_fewer_matches_give_zero_inliers(rng):
    a = rng.uniform(0, 100, (4, 2))
    H, mask = estimate_homography(a, a + 1, get_config("kaggle-baseline").verify)
    assert H is None and mask.shape == (4,) and not mask.any()
    H, mask = estimate_homography(np.zeros((0, 2)), np.zeros((0, 2)), VerifyConfig())
    assert H is None and mask.shape == (0,)


def test_degenerate_points_do_not_raise():
    a = np.zeros((20, 2))  # all points identical: no model
    H, mask = estimate_homography(a, a, VerifyConfig())
    assert mask.shape == (20,)
    assert H is None or mask.sum() >= 0


def test_verify_pair_on_synthetic_features(rng):
    desc = unit_rows(rng.normal(size=(200, 128)))
    kp = rng.uniform(0, 500, (200, 2)).astype(np.float32)
    H = np.array([[1.0, 0.0, 15.0], [0.0, 1.0, -7.0], [0.0, 0.0, 1.0]])
    f0 = Features(kp, desc, np.ones(200, np.float32), np.ones(200, np.float32), (500, 500))
    perm = rng.permutation(200)
    f1 = Features(_project(H, kp)[perm].astype(np.float32), desc[perm], np.ones(200, np.float32),
                  np.ones(200, np.float32), (500, 500))
    res = verify_pair(f0, f1, get_config("kaggle-baseline").verify)
    assert len(res.matches) == 200 and res.num_inliers == 200
    assert np.array_equal(perm[res.matches[:, 1]], res.matches[:, 0])
    empty = Features.empty(128, (10, 10))
    assert verify_pair(f0, empty, VerifyConfig()).num_inliers == 0
