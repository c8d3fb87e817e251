"""Global-descriptor post-processing: PCA-whitening, alpha-QE and DBA (hand-computed cases)."""
from __future__ import annotations

import numpy as np
import pytest

from landmark_retrieval.features import l2_normalize
from landmark_retrieval.io.layout import load_retrieval
from landmark_retrieval.presets import get_config
from landmark_retrieval.search.postprocess import expand, fit_pca, without_self


def test_whitened_train_covariance_is_identity(rng):
    x = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16)) + 3.0  # correlated, off-centre
    p = fit_pca(x.astype(np.float32), whiten=True, eps=0.0)
    y = (x.astype(np.float32) - p.mean) @ p.matrix
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(16), atol=2e-3)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-3)
    assert np.all(np.diff(p.eigenvalues) <= 0)  # directions by decreasing variance


def test_pca_is_a_rotation_and_reduces_dimension(rng):
    x = rng.normal(size=(300, 8)).astype(np.float32)
    p = fit_pca(x)
    c = x - p.mean
    np.testing.assert_allclose((c @ p.matrix) @ p.matrix.T, c, atol=1e-4)  # orthonormal, nothing lost
    small = fit_pca(x, dim=3)
    out = small.apply(x)
    assert out.shape == (300, 3) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(small.matrix, p.matrix[:, :3], atol=1e-5)  # same leading directions, signs fixed
    assert fit_pca(x[:4]).dim == 3  # at most N - 1 directions have variance
    with pytest.raises(ValueError, match="at least 2"):
        fit_pca(x[:1])
    with pytest.raises(ValueError, match=r"shape \(N, 8\)"):
        p.apply(np.zeros((2, 5), np.float32))
    assert p.apply(np.zeros((0, 8), np.float32)).shape == (0, 8)


def test_alpha_query_expansion_hand_case():
    db = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    q = np.array([[1, 0]], np.float32)
    # neighbours 0 (s=1.0) and 1 (s=0.5): q + 1^2 * db0 + 0.5^2 * db1 = (2, 0.25)
    out = expand(q, np.array([[0, 1]]), np.array([[1.0, 0.5]], np.float32), db, alpha=2.0)
    np.testing.assert_allclose(out, l2_normalize(np.array([[2.0, 0.25]])), atol=1e-6)
    # negative similarities weigh nothing; alpha 0 is a plain sum
    out = expand(q, np.array([[2]]), np.array([[-0.7]], np.float32), db, alpha=3.0)
    np.testing.assert_allclose(out, q)
    out = expand(q, np.array([[1]]), np.array([[0.2]], np.float32), db, alpha=0.0)
    np.testing.assert_allclose(out, l2_normalize(np.array([[1.0, 1.0]])), atol=1e-6)
    assert expand(np.zeros((0, 2), np.float32), np.zeros((0, 1), np.int64), np.zeros((0, 1)), db).shape == (0, 2)


def test_dba_drops_each_row_itself():
    scores = np.array([[1.0, 0.8, 0.3], [0.9, 0.9, 0.1]], np.float32)
    indices = np.array([[0, 2, 1], [0, 1, 2]])  # row 1 finds row 0 first (a tie), then itself
    s, n = without_self(scores, indices, 2)
    assert n.tolist() == [[2, 1], [0, 2]]
    np.testing.assert_allclose(s, [[0.8, 0.3], [0.9, 0.1]])


def test_retrieve_with_postprocessing(small_dataset, tmp_path):
    from landmark_retrieval.extract import extract
    from landmark_retrieval.retrieve import retrieve

    work = tmp_path / "w"
    extract(get_config("demo"), small_dataset, work)
    plain = load_retrieval(retrieve(get_config("demo"), small_dataset, work))
    conf = get_config("demo", ["retrieve.whitening=whiten", "retrieve.pca_dim=8", "retrieve.dba_k=2",
                               "retrieve.qe_k=2"])
    post = load_retrieval(retrieve(conf, small_dataset, work))  # settings changed: computed again
    assert post.query_ids == plain.query_ids and post.indices.shape == plain.indices.shape
    assert not np.array_equal(post.scores, plain.scores)
    assert (work / "features" / "train" / "pca.h5").is_file()
    assert np.all(np.diff(post.scores, axis=1) <= 1e-6)  # still sorted
