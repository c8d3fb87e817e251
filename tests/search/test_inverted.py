"""The inverted-file searcher (retrieve.index=inverted): the dense search's exact top-k."""
import numpy as np
import pytest

from landmark_retrieval.search import SEARCHERS
from landmark_retrieval.search.exact import SearchContext, knn
from landmark_retrieval.search.inverted import inverted_search, sparse_knn, to_csr


def sparse_unit_rows(rng, n, d, nnz):
    x = np.zeros((n, d), np.float32)
    for r in range(n):
        cols = rng.choice(d, nnz, replace=False)
        x[r, cols] = rng.random(nnz).astype(np.float32) + 0.1
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_hand_case_with_implicit_zeros():
    db = np.array([[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0], [0, 0, 1]], np.float32)
    q = np.array([[0, 0.6, 0.8], [1, 0, 0]], np.float32)
    s, i = sparse_knn(q, to_csr(db), k=4)
    # query 0: rows 3 (0.8), 1 (0.6), 2 (0.48), 0 (0); query 1: rows 0 (1), 2 (0.6), then zeros 1, 3
    assert i.tolist() == [[3, 1, 2, 0], [0, 2, 1, 3]]
    assert np.allclose(s, [[0.8, 0.6, 0.48, 0], [1, 0.6, 0, 0]], atol=1e-6)
    assert sparse_knn(q, to_csr(db), k=9)[1].shape == (2, 4)  # k clipped to N
    assert sparse_knn(np.zeros((0, 3), np.float32), to_csr(db), k=2)[0].shape == (0, 2)
    with pytest.raises(ValueError, match="dimension"):
        sparse_knn(np.ones((1, 5), np.float32), to_csr(db), k=1)


def test_same_top_k_as_the_dense_search(rng):
    db = sparse_unit_rows(rng, 300, 500, 8)
    q = sparse_unit_rows(rng, 40, 500, 8)
    q[3] = 0  # a query sharing no word: the first k rows, score 0
    q[3, 0] = 1.0
    db[:, 0] = 0
    dense_s, dense_i = knn(q, db, 25, use_faiss=False)
    s, i = sparse_knn(q, to_csr(db, rows=64), 25, block_size=7)
    assert np.array_equal(i, dense_i) and np.allclose(s, dense_s, atol=1e-6)
    assert i[3].tolist() == list(range(25)) and not s[3].any()
    # the registered searcher, on a float16 database as retrieve may hold it
    fs, fi = SEARCHERS["inverted"](q, db.astype(np.float16), 25, SearchContext(conf=None))
    ds, di = knn(q, db.astype(np.float16), 25, use_faiss=False)
    assert np.array_equal(fi, di) and np.allclose(fs, ds, atol=1e-3)


def test_negative_scores_rank_after_implicit_zeros():
    db = np.array([[-1, 0], [0, 1], [0, 0.5]], np.float32)
    s, i = sparse_knn(np.array([[1, 0]], np.float32), to_csr(db), 3)
    assert i.tolist() == [[1, 2, 0]] and np.allclose(s, [[0, 0, -1]])
    with pytest.raises(ValueError, match="NaN"):
        inverted_search(np.full((1, 2), np.nan, np.float32), db, 1, SearchContext(conf=None))
