import os

import numpy as np
import pytest

from landmark_retrieval.config import VerifyConfig
from landmark_retrieval.features import Features
from landmark_retrieval.matching.pairs import estimate_homography, match_descriptors, verify_pair
from landmark_retrieval.presets import get_config
from landmark_retrieval.testing.reference import reference_matches
from landmark_retrieval.testing.two_view import project

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


def test_homography_recovers_inliers_and_model(rng):
    H = np.array([[0.9, 0.1, 20.0], [-0.05, 1.1, -10.0], [1e-4, 5e-5, 1.0]])
    a = rng.uniform(0, 640, (300, 2))
    b = project(H, a)
    outliers = rng.choice(300, 90, replace=False)
    b[outliers] = rng.uniform(0, 640, (90, 2))
    est, mask = estimate_homography(a, b, VerifyConfig(max_reprojection_error=2.0, max_iterations=2000))
    truth = np.ones(300, bool)
    truth[outliers] = False
    assert (mask == truth).mean() > 0.98
    assert np.abs(project(est, a[truth]) - b[truth]).max() < 1.0
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
    a = np.zeros((20, 2))  # all points identical: no homography is defined
    H, mask = estimate_homography(a, a, VerifyConfig())
    assert H is None and mask.shape == (20,) and mask.dtype == bool and not mask.any()
    b = np.repeat(np.arange(20.0)[:, None], 2, axis=1)  # collinear points: degenerate too
    H, mask = estimate_homography(b, b + 3.0, VerifyConfig())
    assert mask.shape == (20,) and (H is None) == (not mask.any())


def test_verify_pair_on_synthetic_features(rng):
    desc = unit_rows(rng.normal(size=(200, 128)))
    kp = rng.uniform(0, 500, (200, 2)).astype(np.float32)
    H = np.array([[1.0, 0.0, 15.0], [0.0, 1.0, -7.0], [0.0, 0.0, 1.0]])
    f0 = Features(kp, desc, np.ones(200, np.float32), np.ones(200, np.float32), (500, 500))
    perm = rng.permutation(200)
    f1 = Features(project(H, kp)[perm].astype(np.float32), desc[perm], np.ones(200, np.float32),
                  np.ones(200, np.float32), (500, 500))
    res = verify_pair(f0, f1, get_config("kaggle-baseline").verify)
    assert len(res.matches) == 200 and res.num_inliers == 200
    assert np.array_equal(perm[res.matches[:, 1]], res.matches[:, 0])
    empty = Features.empty(128, (10, 10))
    assert verify_pair(f0, empty, VerifyConfig()).num_inliers == 0


# --------------------------------------------------------------------------------------------
# The optimised matching gives exactly the straightforward implementation's matches
# --------------------------------------------------------------------------------------------
SETTINGS = [(md, rt, mu, mm) for md in (0.5, 0.9, 1.5) for rt in (None, 0.8, 1.0) for mu in (False, True)
            for mm in (None, 0, 3)] + [(2.1, 1.2, True, None), (0.9, 0.85, True, 200)]


def _random_sets(rng):
    """Random descriptor pairs, many with exact ties: duplicated rows, quantised values."""
    for trial in range(40):
        n0, n1 = (int(n) for n in rng.integers(1, 40, 2))
        dim = int(rng.choice([2, 3, 16, 128]))
        d0, d1 = unit_rows(rng.normal(size=(n0, dim))), unit_rows(rng.normal(size=(n1, dim)))
        kind = trial % 4
        if kind == 1:  # duplicated rows on both sides: exact ties for argmax, second and column
            d0, d1 = d0[rng.integers(0, max(1, n0 // 3), n0)], d1[rng.integers(0, max(1, n1 // 3), n1)]
        elif kind == 2:  # few distinct values: many equal similarities
            d0 = unit_rows(rng.integers(0, 2, (n0, dim)) + np.eye(1, dim, 0))
            d1 = unit_rows(rng.integers(0, 2, (n1, dim)) + np.eye(1, dim, 0))
        elif kind == 3:  # every query is a copy of a candidate: distance 0, mutual ties
            d0 = d1[rng.integers(0, n1, n0)]
        yield d0, d1


@pytest.mark.parametrize("max_distance, ratio_test, mutual, max_matches", SETTINGS)
def test_match_descriptors_equals_reference_on_random_descriptors(rng, max_distance, ratio_test, mutual, max_matches):
    for d0, d1 in _random_sets(rng):
        args = (max_distance, ratio_test, mutual, max_matches)
        expected = reference_matches(d0, d1, *args)
        got = match_descriptors(d0, d1, *args)
        assert got.dtype == np.int64 and got.shape == expected.shape
        assert np.array_equal(got, expected), (d0.shape, d1.shape, args)


def test_ratio_test_edge_cases():
    a = unit_rows(np.array([[1, 0.05, 0, 0], [1, -0.05, 0, 0], [0, 0, 1, 0]], np.float32))
    q = unit_rows(np.array([[1, 0, 0, 0], [0, 0, 1, 0.1]], np.float32))
    # q[0] is exactly as close to a[0] as to a[1]: the second neighbour ties, any ratio <= 1 rejects
    for ratio in (0.5, 0.99, 1.0):
        assert match_descriptors(q, a, 1.0, ratio_test=ratio).tolist() == [[1, 2]]
    assert match_descriptors(q, a, 1.0, ratio_test=1.01).tolist() == [[0, 0], [1, 2]]
    # a duplicated candidate is its own second neighbour: rejected
    dup = np.stack([E[0], E[0], E[1]])
    assert match_descriptors(E[:2], dup, 1.0, ratio_test=0.9).tolist() == [[1, 2]]
    # one candidate: there is no second neighbour, the ratio test cannot reject
    assert match_descriptors(E[:2], E[:1], 1.0, ratio_test=0.1).tolist() == [[0, 0]]
    for args in ((1.0, 0.5), (1.0, 0.99), (1.0, 1.0), (1.0, 1.01), (0.5, 0.8)):
        for d0, d1 in ((q, a), (E[:2], dup), (E[:2], E[:1])):
            assert np.array_equal(match_descriptors(d0, d1, *args), reference_matches(d0, d1, *args))


def test_mutual_ties_and_match_cap():
    # two identical queries share their nearest candidate: only the first is its mutual neighbour
    q = np.stack([E[0], E[0], E[1]])
    assert match_descriptors(q, E[:3], 1.0, mutual=True).tolist() == [[0, 0], [2, 1]]
    assert match_descriptors(q, E[:3], 1.0).tolist() == [[0, 0], [1, 0], [2, 1]]
    # the cap keeps the closest matches (equal distances: the lower query index), ordered by i0
    c = unit_rows(np.array([[1, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.1], [0, 0, 0, 1]], np.float32))
    d = np.stack([E[0], E[1], E[2], E[3]])
    assert match_descriptors(c, d, 1.0).tolist() == [[0, 0], [1, 1], [2, 2], [3, 3]]
    assert match_descriptors(c, d, 1.0, max_matches=2).tolist() == [[1, 1], [3, 3]]
    assert match_descriptors(c, d, 1.0, max_matches=3).tolist() == [[1, 1], [2, 2], [3, 3]]
    assert match_descriptors(c, d, 1.0, max_matches=0).shape == (0, 2)
    assert match_descriptors(q, E[:3], 1.0, max_matches=1).tolist() == [[0, 0]]  # tie: lower i0


def test_match_descriptors_checks_its_arguments():
    with pytest.raises(ValueError, match=r"same D.*\(2, 4\) and \(3, 3\)"):
        match_descriptors(E[:2], np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="max_matches"):
        match_descriptors(E[:2], E[:2], max_matches=-1)


@pytest.fixture(scope="module")
def real_features(shared_data):
    """RootSIFT (1000 strongest keypoints) of a few real photographs: pairs of the same scene
    (Oxford graf and boat, two pairs of Sacre Coeur) and of different scenes."""
    from landmark_retrieval.backends.registry import make_backend
    from landmark_retrieval.io.images import read_image

    sift = make_backend(get_config("default", ["extract.sift.max_keypoints=1000"]).extract)
    paths = ["oxford_affine/graf/img1.png", "oxford_affine/graf/img3.png", "oxford_affine/boat/img1.png",
             "oxford_affine/boat/img3.png"] + [f"hloc_sacre_coeur/mapping/{name}.jpg" for name in (
             "10265353_3838484249", "60584745_2207571072", "17295357_9106075285", "93341989_396310999")]
    if not all((shared_data / p).is_file() for p in paths):
        pytest.skip("the real photographs of this test are not in the shared data")
    return [sift.extract(read_image(shared_data / p)) for p in paths]


REAL_PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 4), (3, 5), (7, 0)]  # 4 of the same scene, 4 not


def _real_pairs(feats):
    return [(feats[i], feats[j]) for i, j in REAL_PAIRS]


def test_match_descriptors_equals_reference_on_real_descriptors(real_features):
    for f0, f1 in _real_pairs(real_features):
        for args in SETTINGS:
            assert np.array_equal(match_descriptors(f0.descriptors, f1.descriptors, *args),
                                  reference_matches(f0.descriptors, f1.descriptors, *args)), args


def test_kaggle_baseline_inliers_unchanged_on_real_pairs(real_features):
    """verify_pair with the kaggle-baseline settings gives the inliers of the code before the
    matching was optimised (the reference matching, then DEGENSAC on the same putatives)."""
    conf = get_config("kaggle-baseline").verify
    positives = 0
    for f0, f1 in _real_pairs(real_features):
        old = reference_matches(f0.descriptors, f1.descriptors, conf.max_descriptor_distance)
        _, mask = estimate_homography(f0.keypoints[old[:, 0]], f1.keypoints[old[:, 1]], conf)
        res = verify_pair(f0, f1, conf)
        assert np.array_equal(res.matches, old) and res.num_inliers == int(mask.sum())
        positives += res.num_inliers >= 50
    assert positives >= 3  # the same-scene pairs really are verified


def test_fast_preset_filters_putatives_and_keeps_true_matches(real_features):
    base, fast = get_config("kaggle-baseline"), get_config("fast")
    assert (fast.verify.mutual, fast.verify.ratio_test, fast.verify.max_matches, fast.verify.max_keypoints) == \
        (True, 0.85, 200, 800)
    for name in ("max_descriptor_distance", "max_reprojection_error", "confidence", "max_iterations", "min_matches"):
        assert getattr(fast.verify, name) == getattr(base.verify, name)
    assert fast.extract == base.extract and fast.predict == base.predict
    inliers = []
    for (f0, f1), same in zip(_real_pairs(real_features), [True] * 4 + [False] * 4):
        b, f = verify_pair(f0, f1, base.verify), verify_pair(f0, f1, fast.verify)
        assert len(f.matches) <= min(200, len(b.matches) // 3)
        if same:
            assert f.num_inliers >= 40 and f.num_inliers >= 0.5 * len(f.matches)
        else:
            assert f.num_inliers < 15
        inliers.append((b.num_inliers, f.num_inliers))
    # a wide-baseline Sacre Coeur pair: ~1000 mostly-wrong putatives hide it from the baseline's
    # 1000 DEGENSAC iterations; the filtered ~100 reveal it
    assert inliers[3][1] > 2 * inliers[3][0]


def test_kaggle_baseline_preset_is_unchanged():
    v = get_config("kaggle-baseline").verify
    assert (v.num_to_rerank, v.max_descriptor_distance, v.ratio_test, v.mutual, v.max_matches,
            v.max_reprojection_error, v.confidence, v.max_iterations, v.min_matches) == \
        (10, 0.9, None, False, None, 4.0, 0.99, 1000, 5)


def test_delg_like_features_separate_same_landmark_pairs():
    from landmark_retrieval.testing.local_features import delg_like_set

    syn = delg_like_set(num_landmarks=2, train_views=2, test_views=1, num_distractors=1, num_candidates=4,
                        positives=2, num_features=400, scene_points=600, seed=1)
    assert len(syn.tasks) == 3 and all(len(c) == 4 for _, c in syn.tasks)
    fast = get_config("fast").verify
    for q, cands in syn.tasks:
        for c in cands:
            a, b = syn.test[q], syn.train[c]
            assert np.array_equal(match_descriptors(a.descriptors, b.descriptors, 0.9, 0.85, True, 200),
                                  reference_matches(a.descriptors, b.descriptors, 0.9, 0.85, True, 200))
            inliers = verify_pair(a, b, fast).num_inliers
            assert inliers >= 15 if syn.is_positive(q, c) else inliers < 8, (q, c, inliers)


def test_worker_processes_get_one_blas_thread(monkeypatch):
    from landmark_retrieval.matching import pool as verify

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with verify._worker_environment():
        assert all(os.environ[name] == "1" for name in verify.WORKER_THREAD_ENV)
    assert os.environ["OPENBLAS_NUM_THREADS"] == "7" and "OMP_NUM_THREADS" not in os.environ
