import numpy as np
import pytest

from landmark_retrieval.search.exact import knn


def unit_rows(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute(q, db, k):
    sim = q.astype(np.float64) @ db.T.astype(np.float64)
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, idx, 1), idx


@pytest.mark.parametrize("use_faiss", [False, True])
@pytest.mark.parametrize("block, db_block", [(3, 7), (1000, 100000)])
def test_knn_matches_brute_force(rng, use_faiss, block, db_block):
    q, db = unit_rows(rng.normal(size=(20, 16))), unit_rows(rng.normal(size=(50, 16)))
    s, i = knn(q, db, 5, block_size=block, db_block_size=db_block, use_faiss=use_faiss)
    bs, bi = brute(q, db, 5)
    assert s.dtype == np.float32 and i.shape == (20, 5)
    assert np.array_equal(i, bi)
    assert np.allclose(s, bs, atol=1e-5)


def test_knn_hand_case_and_ties():
    db = np.array([[1, 0], [0, 1], [1, 0], [-1, 0]], np.float32)
    q = np.array([[1, 0]], np.float32)
    s, i = knn(q, db, 3, use_faiss=False, db_block_size=2)
    assert i.tolist() == [[0, 2, 1]]  # ties: lower index first, across blocks too
    assert s.tolist() == [[1.0, 1.0, 0.0]]


def test_knn_empty_and_k_larger_than_db(rng):
    db = unit_rows(rng.normal(size=(3, 8)))
    s, i = knn(np.zeros((0, 8), np.float32), db, 5)
    assert s.shape == (0, 3) and i.shape == (0, 3)
    s, i = knn(db, db, 10, use_faiss=False)
    assert i.shape == (3, 3) and i[:, 0].tolist() == [0, 1, 2]
    s, i = knn(db, np.zeros((0, 8), np.float32), 5)
    assert s.shape == (3, 0)
    with pytest.raises(ValueError, match="dimension"):
        knn(db, np.zeros((2, 4), np.float32), 1)


@pytest.mark.parametrize("use_faiss", [False, True])
def test_knn_half_precision_database(rng, use_faiss):
    q, db = unit_rows(rng.normal(size=(30, 64))), unit_rows(rng.normal(size=(500, 64)))
    s32, i32 = knn(q, db, 10, use_faiss=use_faiss, db_block_size=128)
    s16, i16 = knn(q, db.astype(np.float16), 10, use_faiss=use_faiss, db_block_size=128)
    assert s16.dtype == np.float32 and np.allclose(s16, s32, atol=2e-3)
    assert (i16[:, 0] == i32[:, 0]).mean() > 0.95


def test_retrieve_step_half_precision(small_dataset, tmp_path):
    from landmark_retrieval.extract import extract
    from landmark_retrieval.io.layout import load_retrieval
    from landmark_retrieval.presets import get_config
    from landmark_retrieval.retrieve import retrieve

    work = tmp_path / "w"
    extract(get_config("demo"), small_dataset, work)
    full = load_retrieval(retrieve(get_config("demo"), small_dataset, work))
    half = load_retrieval(retrieve(get_config("demo", ["retrieve.half_precision=true"]), small_dataset, work))
    assert half.query_ids == full.query_ids
    assert np.array_equal(half.indices[:, 0], full.indices[:, 0])
    assert np.allclose(half.scores, full.scores, atol=2e-3)
