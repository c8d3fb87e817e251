"""Searchers of the retrieve step: streamed exact search from a float16 matrix on disk, and the
approximate faiss indexes (``retrieve.index``)."""
import logging
import sys

import numpy as np
import pytest

from landmark_retrieval.config import RetrieveConfig
from landmark_retrieval.presets import get_config
from landmark_retrieval.search import SEARCHERS, get_searcher
from landmark_retrieval.search.ann import import_faiss
from landmark_retrieval.search.exact import DiskMatrix, SearchContext, cached_matrix, knn, write_matrix


def unit_rows(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def canonical(q, db, k):
    """Reference top-k: descending score, ties by lower row (float64 products)."""
    sim = q.astype(np.float64) @ db.T.astype(np.float64)
    order = np.lexsort((np.broadcast_to(np.arange(len(db)), sim.shape), -sim), axis=1)[:, :k]
    return np.take_along_axis(sim, order, 1), order


@pytest.fixture
def tied(rng):
    """Exactly representable values (multiples of 1/4 in 16-d): every product is exact whatever
    the summation order, and many rows are duplicates (ties everywhere, also at the k-th place)."""
    base = rng.integers(-1, 2, (30, 16)) / 4
    return (rng.integers(-1, 2, (37, 16)) / 4).astype(np.float32), base[rng.integers(0, 30, 2000)].astype(np.float16)


@pytest.mark.parametrize("use_faiss", [False, True])
def test_streamed_equals_in_memory_with_ties_for_any_block_size(tied, tmp_path, use_faiss):
    q, db = tied
    ref_s, ref_i = canonical(q, db, 50)
    matrix = write_matrix(tmp_path / "m.npy", len(db), 16, iter([db[:700], db[700:]]))
    assert matrix.shape == (2000, 16) and np.array_equal(matrix.read(0, 2000, np.float16), db)
    for block in (7, 4096):
        for rows in (250, 5000):
            s, i = knn(q, db, 50, block_size=block, db_block_size=rows, use_faiss=use_faiss)
            s2, i2 = knn(q, matrix, 50, block_size=block, stream_block=rows, use_faiss=use_faiss)
            for scores, ids in ((s, i), (s2, i2)):
                assert np.array_equal(ids, ref_i), (block, rows)
                assert np.array_equal(scores, ref_s.astype(np.float32))


@pytest.mark.parametrize("use_faiss", [False, True])
def test_streamed_equals_in_memory_on_random_descriptors(rng, tmp_path, use_faiss):
    q, db = unit_rows(rng.normal(size=(60, 96))), unit_rows(rng.normal(size=(3000, 96))).astype(np.float16)
    s0, i0 = knn(q, db, 20, use_faiss=use_faiss)
    matrix = write_matrix(tmp_path / "m.npy", len(db), 96, iter([db]))
    for rows in (100, 999, 3000):
        s, i = knn(q, matrix, 20, stream_block=rows, block_size=25, use_faiss=use_faiss)
        assert i.dtype == np.int64 and s.dtype == np.float32
        assert np.array_equal(i, i0)
        assert np.allclose(s, s0, atol=1e-6)


def test_streamed_k_larger_than_database_and_empty_inputs(rng, tmp_path):
    db = unit_rows(rng.normal(size=(5, 8))).astype(np.float16)
    matrix = write_matrix(tmp_path / "m.npy", 5, 8, iter([db[:2], db[2:]]))
    s, i = knn(unit_rows(rng.normal(size=(3, 8))), matrix, 10, stream_block=2)
    assert i.shape == (3, 5) and sorted(i[0].tolist()) == [0, 1, 2, 3, 4]
    assert np.all(np.diff(s, axis=1) <= 0)
    s, i = knn(np.zeros((0, 8), np.float32), matrix, 10)
    assert s.shape == (0, 5) and i.shape == (0, 5) and i.dtype == np.int64
    empty = write_matrix(tmp_path / "e.npy", 0, 8, iter([]))
    s, i = knn(np.ones((2, 8), np.float32), empty, 3)
    assert s.shape == (2, 0) and i.shape == (2, 0)
    with pytest.raises(ValueError, match="dimension"):
        knn(np.ones((2, 4), np.float32), matrix, 1)


def test_matrix_is_written_atomically_and_checked(tmp_path):
    bad = np.ones((4, 3), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 6 has NaN"):
        write_matrix(tmp_path / "m.npy", 8, 3, iter([np.ones((4, 3)), bad]))
    assert not list(tmp_path.iterdir())  # neither the matrix nor its tmp file
    with pytest.raises(ValueError, match="expected 5 rows, got 4"):
        write_matrix(tmp_path / "m.npy", 5, 3, iter([np.ones((4, 3))]))
    assert not list(tmp_path.iterdir())


def test_matrix_cache_reused_and_rebuilt_when_features_change(tmp_path, caplog):
    path = tmp_path / "globals-f16.npy"
    calls = []

    def blocks(value):
        def make():
            calls.append(value)
            yield np.full((3, 2), value, np.float32)
        return make

    m = cached_matrix(path, {"features": "a"}, 3, 2, blocks(1.0))
    assert m.read(0, 3).tolist() == [[1.0, 1.0]] * 3 and (tmp_path / "globals-f16.json").is_file()
    m = cached_matrix(path, {"features": "a"}, 3, 2, blocks(2.0))
    assert calls == [1.0] and m.read(0, 3)[0, 0] == 1.0 and "Reusing" in caplog.text
    m = cached_matrix(path, {"features": "b"}, 3, 2, blocks(3.0))  # features changed
    assert calls == [1.0, 3.0] and m.read(0, 3)[0, 0] == 3.0
    path.write_bytes(path.read_bytes()[:-4])  # damaged: rebuilt
    m = cached_matrix(path, {"features": "b"}, 3, 2, blocks(4.0))
    assert calls[-1] == 4.0 and m.read(2, 3).tolist() == [[4.0, 4.0]]


def clustered(rng, n=3000, dim=32, groups=40, queries=100):
    """A mixture of tight clusters (near-duplicate groups), and queries near random members."""
    centres = unit_rows(rng.normal(size=(groups, dim)))
    db = unit_rows(centres[rng.integers(0, groups, n)] + 0.15 * rng.normal(size=(n, dim)))
    q = unit_rows(db[rng.integers(0, n, queries)] + 0.05 * rng.normal(size=(queries, dim)))
    return q, db


def context(tmp_path=None, **sections):
    conf = RetrieveConfig()
    conf.ivfpq.nlist, conf.ivfpq.m, conf.ivfpq.bits, conf.ivfpq.nprobe = 16, 8, 6, 8
    for name, values in sections.items():
        for key, value in values.items():
            setattr(getattr(conf, name), key, value)
    path = (lambda name: tmp_path / f"ann-{name}.faiss") if tmp_path else None
    return SearchContext(conf, index_path=path, database_key={"db": "toy"})


@pytest.fixture
def one_thread():
    """faiss in one thread: OpenMP threads crawl on a busy 2-core machine (the results are the same)."""
    faiss = pytest.importorskip("faiss")
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(old)


@pytest.mark.parametrize("name", ["ivfpq", "hnsw"])
def test_ann_is_deterministic_saved_reused_and_recalls(rng, tmp_path, caplog, name, one_thread):
    q, db = clustered(rng)
    _, exact = knn(q, db, 10)
    s1, i1 = SEARCHERS[name](q, db, 10, context(tmp_path))
    assert (tmp_path / f"ann-{name}.faiss").is_file() and (tmp_path / f"ann-{name}.json").is_file()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i1, exact)])
    assert recall > 0.8
    assert np.allclose(s1, np.einsum("qkd,qd->qk", db[i1], q), atol=1e-5)  # exact cosine of the neighbours
    assert np.all(np.diff(s1, axis=1) <= 0)
    s2, i2 = SEARCHERS[name](q, db, 10, context(None))  # built again in memory: same index
    assert np.array_equal(i1, i2) and np.array_equal(s1, s2)
    caplog.clear()
    s3, i3 = SEARCHERS[name](q, db, 10, context(tmp_path))
    assert "Reusing" in caplog.text and np.array_equal(i1, i3)
    key = "nlist" if name == "ivfpq" else "m"
    SEARCHERS[name](q, db, 10, context(tmp_path, **{name: {key: 8}}))  # another build option: rebuilt
    assert "Reusing" not in caplog.text.split("Reusing", 1)[1]


def test_ann_fills_short_results_and_handles_k_beyond_database(rng, one_thread):
    q, db = clustered(rng, n=400)
    s, i = SEARCHERS["ivfpq"](q, db, 50, context(None, ivfpq={"nprobe": 1, "nlist": 8}))
    assert (i >= 0).all() and i.shape == (100, 50)  # one list of ~50 rows can hold fewer than 50
    s, i = SEARCHERS["hnsw"](q[:3], db[:5], 9, context(None))
    assert i.shape == (3, 5) and sorted(i[0].tolist()) == [0, 1, 2, 3, 4]
    s, i = SEARCHERS["hnsw"](q[:0], db, 9, context(None))
    assert s.shape == (0, 9)


def test_missing_faiss_names_the_option_and_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"retrieve.index=hnsw needs faiss.*pip install landmark-retrieval\[faiss\]"):
        import_faiss("retrieve.index=hnsw")
    with pytest.raises(ImportError, match=r"landmark-retrieval\[faiss\]"):
        SEARCHERS["ivfpq"](np.ones((2, 4), np.float32), np.ones((5, 4), np.float32), 2, context(None))


def test_index_option_is_validated():
    assert get_config(overrides=["retrieve.index=HNSW"]).retrieve.index == "hnsw"
    with pytest.raises(ValueError, match="retrieve.index: unknown searcher 'annoy'; choose one of: exact"):
        get_config(overrides=["retrieve.index=annoy"])
    with pytest.raises(ValueError, match="retrieve.hnsw.ef_search"):
        get_config(overrides=["retrieve.hnsw.ef_search=0"])
    with pytest.raises(ValueError, match="unknown searcher"):
        get_searcher("nope")


def test_retrieve_step_streamed_equals_in_memory(small_dataset, tmp_path, caplog):
    from landmark_retrieval.extract import extract
    from landmark_retrieval.io.layout import database_matrix_path, load_retrieval
    from landmark_retrieval.retrieve import retrieve

    work = tmp_path / "w"
    extract(get_config("demo"), small_dataset, work)
    mem = load_retrieval(retrieve(get_config("demo", ["retrieve.qe_k=2", "retrieve.half_precision=true"]),
                                  small_dataset, work))
    assert not database_matrix_path(work).exists()  # small: in memory (retrieve.stream none)
    conf = get_config("demo", ["retrieve.stream=true", "retrieve.stream_block=5", "retrieve.qe_k=2"])
    disk = load_retrieval(retrieve(conf, small_dataset, work))  # float16 on disk, like half_precision
    assert DiskMatrix(database_matrix_path(work)).shape == (len(disk.db_ids), 4096)
    assert disk.query_ids == mem.query_ids and disk.db_ids == mem.db_ids
    assert np.array_equal(disk.indices, mem.indices) and np.allclose(disk.scores, mem.scores, atol=2e-3)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="landmark_retrieval"):
        again = load_retrieval(retrieve(conf, small_dataset, work, overwrite=True))
    assert "Reusing the float16 database matrix" in caplog.text
    assert np.array_equal(again.indices, disk.indices) and np.array_equal(again.scores, disk.scores)


@pytest.mark.slow
def test_run_with_hnsw_gives_a_valid_submission(small_dataset, tmp_path):
    pytest.importorskip("faiss")
    from landmark_retrieval.cli import main
    from landmark_retrieval.io.dataset import load_dataset
    from landmark_retrieval.io.layout import search_index_path
    from landmark_retrieval.io.submission import read_submission

    work, out = tmp_path / "w", tmp_path / "submission.csv"
    assert main(["run", "--data", str(small_dataset), "--work", str(work), "--out", str(out), "--preset", "demo",
                 "--workers", "1", "--set", "retrieve.index=hnsw"]) == 0
    sub = read_submission(out)
    assert list(sub) == load_dataset(small_dataset).test_ids and all(v is not None for v in sub.values())
    assert search_index_path(work, "train", "hnsw").is_file()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("rows", [1, 3, 4, 10, 11])
def test_blocks_reusing_buffers_give_the_same_rows(rng, tmp_path, dtype, rows):
    """DiskMatrix.blocks(reuse=True) reads into two float16 buffers allocated once (and converts
    into one float32 buffer): each block, while the next one is read, holds the same rows as a
    freshly allocated read (last block: shorter)."""
    from landmark_retrieval.search.exact import DiskMatrix, write_matrix

    x = rng.standard_normal((10, 3)).astype(np.float32)
    m = write_matrix(tmp_path / "m.npy", 10, 3, iter([x[:6], x[6:]]))
    expected = [(s, b.copy()) for s, b in m.blocks(rows, dtype)]
    seen, buffers = [], set()
    for start, block in m.blocks(rows, dtype, reuse=True):
        assert block.dtype == dtype and block.flags.c_contiguous
        buffers.add(block.__array_interface__["data"][0])
        seen.append((start, block.copy()))
    assert [s for s, _ in seen] == [s for s, _ in expected] == list(range(0, 10, rows))
    for (_, a), (_, b) in zip(seen, expected):
        assert np.array_equal(a, b)
    assert np.array_equal(np.concatenate([b for _, b in seen]).astype(np.float32),
                          x.astype(np.float16).astype(np.float32))
    # float16: the two read buffers in turn; float32: the one conversion buffer
    assert len(buffers) == (min(2, len(expected)) if dtype == np.float16 else 1)
    assert [len(b) for _, b in DiskMatrix(tmp_path / "m.npy").blocks(rows, dtype, reuse=True)] == \
        [len(b) for _, b in expected]
