"""Hamming matching of binary descriptors (uint8 packed bits): hand-made bit patterns with known
distances, and the same rules as float matching against a straightforward reference."""
import numpy as np
import pytest

from landmark_retrieval.features import Features, is_binary
from landmark_retrieval.matching.pairs import match_binary_descriptors, match_descriptors, verify_pair
from landmark_retrieval.presets import get_config


def _bits(*counts):
    """Rows of 32 bytes whose first ``count`` bits are set (Hamming distance ``count`` to zeros)."""
    out = np.zeros((len(counts), 256), np.uint8)
    for row, count in enumerate(counts):
        out[row, :count] = 1
    return np.packbits(out, axis=1)


def _reference(d0, d1, max_distance, ratio_test=None, mutual=False, max_matches=None):
    """The rules written out: full distance matrix, first argmin, sort for the second nearest."""
    dist = np.unpackbits(d0[:, None, :] ^ d1[None, :, :], axis=2).sum(axis=2).astype(float)
    nn = dist.argmin(axis=1)
    best = dist[np.arange(len(d0)), nn]
    keep = best <= max_distance
    if ratio_test is not None and d1.shape[0] >= 2:
        keep &= best < ratio_test * np.sort(dist, axis=1)[:, 1]
    if mutual:
        keep &= dist.argmin(axis=0)[nn] == np.arange(len(d0))
    i0 = np.flatnonzero(keep)
    if max_matches is not None and len(i0) > max_matches:
        i0 = np.sort(i0[np.argsort(best[i0], kind="stable")[:max_matches]])
    return np.stack([i0, nn[i0]], axis=1)


def test_hand_made_hamming_distances():
    zero = _bits(0)
    d1 = _bits(10, 3, 256)  # distances 10, 3 and 256 bits from zero
    assert match_binary_descriptors(zero, d1, 3).tolist() == [[0, 1]]  # at most max_distance bits
    assert match_binary_descriptors(zero, d1, 2).tolist() == []
    # ratio test: 3 < 0.5 * 10 passes, 3 < 0.3 * 10 does not
    assert match_binary_descriptors(zero, d1, 64, ratio_test=0.5).tolist() == [[0, 1]]
    assert match_binary_descriptors(zero, d1, 64, ratio_test=0.3).tolist() == []
    # a tie: the first of two equal rows; the ratio test rejects it (the second is as close)
    tie = _bits(7, 5, 5)
    assert match_binary_descriptors(zero, tie, 64).tolist() == [[0, 1]]
    assert match_binary_descriptors(zero, tie, 64, ratio_test=0.99).tolist() == []
    # one candidate: the ratio test cannot reject
    assert match_binary_descriptors(zero, _bits(4), 64, ratio_test=0.1).tolist() == [[0, 0]]


def test_mutual_and_max_matches():
    q = _bits(2, 1, 40)  # all three are nearest to the zero row of d1; row 1 is the closest
    d1 = _bits(0, 100)
    assert match_binary_descriptors(q, d1, 64).tolist() == [[0, 0], [1, 0], [2, 0]]
    assert match_binary_descriptors(q, d1, 64, mutual=True).tolist() == [[1, 0]]
    assert match_binary_descriptors(q, d1, 64, max_matches=2).tolist() == [[0, 0], [1, 0]]
    assert match_binary_descriptors(q, d1, 64, max_matches=1).tolist() == [[1, 0]]
    assert match_binary_descriptors(q, d1, 64, max_matches=0).tolist() == []
    # mutual on a tie the other way: the first of two equal query rows
    assert match_binary_descriptors(_bits(3, 3), _bits(0), 64, mutual=True).tolist() == [[0, 0]]
    with pytest.raises(ValueError, match="max_matches"):
        match_binary_descriptors(q, d1, 64, max_matches=-1)


@pytest.mark.parametrize("n0, n1", [(0, 5), (5, 0), (0, 0)])
def test_empty_inputs(n0, n1):
    m = match_binary_descriptors(np.zeros((n0, 32), np.uint8), np.zeros((n1, 32), np.uint8), 64, 0.8, True)
    assert m.shape == (0, 2) and m.dtype == np.int64


def test_same_rules_as_the_reference_on_random_descriptors():
    rng = np.random.default_rng(0)
    d1 = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    # 150 noisy copies of rows of d1 (a few bits flipped) and 50 unrelated rows
    flips = np.packbits(rng.random((150, 256)) < 0.08, axis=1)
    d0 = np.concatenate([d1[rng.choice(300, 150)] ^ flips, rng.integers(0, 256, (50, 32), dtype=np.uint8)])
    d0[10] = d0[11]  # duplicated query rows and candidates: ties both ways
    d1[5] = d1[6]
    for ratio in (None, 0.8):
        for mutual in (False, True):
            for max_matches in (None, 40):
                got = match_binary_descriptors(d0, d1, 64, ratio, mutual, max_matches)
                want = _reference(d0, d1, 64, ratio, mutual, max_matches)
                assert np.array_equal(got, want), (ratio, mutual, max_matches)
    assert len(match_binary_descriptors(d0, d1, 64)) >= 140  # the noisy copies match


def test_dispatch_on_dtype_and_mixed_inputs():
    zero, d1 = _bits(0), _bits(10, 3)
    assert is_binary(zero) and not is_binary(zero.astype(np.float32))
    # uint8 descriptors: max_hamming_distance applies, max_distance (L2) does not
    assert match_descriptors(zero, d1, max_distance=0.1, max_hamming_distance=3).tolist() == [[0, 1]]
    assert match_descriptors(zero, d1, max_distance=0.1, max_hamming_distance=2).tolist() == []
    with pytest.raises(ValueError, match="uint8"):
        match_descriptors(zero, np.zeros((2, 32), np.float32))
    with pytest.raises(ValueError, match="same B"):
        match_binary_descriptors(zero, np.zeros((2, 16), np.uint8))


def test_verify_pair_with_binary_features():
    rng = np.random.default_rng(1)
    desc = rng.integers(0, 256, (60, 32), dtype=np.uint8)
    kp = rng.uniform(0, 500, (60, 2)).astype(np.float32)
    a = Features(kp, desc, np.ones(60, np.float32), np.ones(60, np.float32), (500, 500))
    b = Features(kp + np.float32([30, -20]), desc, np.ones(60, np.float32), np.ones(60, np.float32), (500, 500))
    vc = get_config("default").verify
    res = verify_pair(a, b, vc)
    assert res.matches.tolist() == [[i, i] for i in range(60)] and res.num_inliers == 60
    assert np.allclose(res.homography / res.homography[2, 2], [[1, 0, 30], [0, 1, -20], [0, 0, 1]], atol=1e-3)


def test_wrong_argument_types_name_what_was_expected():
    """Library calls with a wrong argument type raise TypeError naming the argument and what it takes."""
    from landmark_retrieval.config import VerifyConfig
    from landmark_retrieval.matching.pairs import estimate_homography

    d = np.eye(3, 4, dtype=np.float32)
    with pytest.raises(TypeError, match=r"match_descriptors: desc0 must be an \(N, D\) array.*not NoneType"):
        match_descriptors(None, d)
    with pytest.raises(TypeError, match="match_descriptors: desc1 must be .* not dict"):
        match_descriptors(d, {"a": 1})
    with pytest.raises(TypeError, match="match_binary_descriptors: desc0 .* not str"):
        match_binary_descriptors("bits", np.zeros((2, 32), np.uint8))
    points = np.zeros((5, 2))
    for conf in (None, {"min_matches": 5}):
        with pytest.raises(TypeError, match=r"estimate_homography: conf must be a VerifyConfig \(e\.g\. "):
            estimate_homography(points, points, conf)
    with pytest.raises(TypeError, match="estimate_homography: kpts1 must be a \\(K, 2\\) array .* not NoneType"):
        estimate_homography(points, None, VerifyConfig())
    f = Features.empty(4, (10, 10))
    with pytest.raises(TypeError, match="verify_pair: feats1 must be Features"):
        verify_pair(f, d, VerifyConfig())
    with pytest.raises(TypeError, match="verify_pair: conf must be a VerifyConfig"):
        verify_pair(f, f, {"min_matches": 5})
    assert verify_pair(f, f, VerifyConfig()).num_inliers == 0  # right types: no error, no inliers
