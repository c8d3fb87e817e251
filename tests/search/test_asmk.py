"""ASMK* (retrieve.index=asmk): aggregation and the selective kernel against hand-computed values on
a toy vocabulary, the inverted file against the formula, and a run end to end (resume, reuse)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from landmark_retrieval.search.asmk import AsmkCodes, InvertedFile, aggregate, idf_weights, nearest_k_words

#: a toy vocabulary of three 2-d words; codes are 2 bits (one byte, the low 6 bits padding)
WORDS = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], np.float32)


def test_aggregation_sums_residuals_per_word_and_keeps_their_signs():
    x = np.array([[1.0, -2.0], [-0.5, 1.0], [11.0, 1.0], [9.0, 3.0]], np.float32)
    # word 0: (1, -2) + (-0.5, 1) = (0.5, -1) -> bits 1 0; word 1: (1, 1) + (-1, 3) = (0, 4) -> bits 0 1
    words, codes = aggregate(x, WORDS)
    assert words.tolist() == [0, 1]
    assert np.unpackbits(codes, axis=1)[:, :2].tolist() == [[1, 0], [0, 1]]
    # multiple assignment: (1, -2) also goes to its second nearest word (1: residual (-9, -2))
    assert nearest_k_words(x[:1], WORDS, 2).tolist() == [[0, 1]]
    words, codes = aggregate(x[:1], WORDS, assignments=2)
    assert words.tolist() == [0, 1] and np.unpackbits(codes, axis=1)[:, :2].tolist() == [[1, 0], [0, 0]]
    empty_words, empty_codes = aggregate(np.zeros((0, 2), np.float32), WORDS)
    assert empty_words.shape == (0,) and empty_codes.shape == (0, 1) and empty_codes.dtype == np.uint8


def _codes(images):
    """AsmkCodes from per-image lists of (word, two bits)."""
    words, codes, offsets = [], [], [0]
    for image in images:
        for word, bits in image:
            words.append(word)
            codes.append(np.packbits(np.array(bits, np.uint8)))
        offsets.append(len(words))
    return AsmkCodes(np.array(words, np.int32), np.array(codes, np.uint8).reshape(-1, 1), np.array(offsets))


def test_the_selective_kernel_by_hand():
    # three database images over words 0..2 (2-d descriptors: u = 1 - 2 h / 2 in {1, 0, -1})
    db = _codes([[(0, [1, 0]), (1, [1, 1])],  # image 0
                 [(0, [1, 1]), (2, [0, 0])],  # image 1
                 [(1, [1, 1])]])  # image 2
    idf = idf_weights(db, 3)  # n_c = 2, 2, 1 of N = 3
    assert np.allclose(idf, [math.log(1.5), math.log(1.5), math.log(3)])
    ivf = InvertedFile(db, 3, 2, alpha=3.0, threshold=0.0)
    query = _codes([[(0, [1, 0]), (1, [1, 0])]])
    s = ivf.scores(query.words, query.codes)
    a = math.log(1.5)
    # image 0: word 0 identical (u = 1) + word 1 one bit off (u = 0: not above the threshold)
    # image 1: word 0 one bit off (0); image 2: word 1 one bit off (0)
    assert s[0] == pytest.approx(a * 1.0 / math.sqrt(2 * a) / math.sqrt(2 * a))
    assert s[1] == 0 and s[2] == 0
    # alpha 1, threshold -1: identical words add their idf, opposite ones (u = -1) are not above it
    ivf = InvertedFile(db, 3, 2, alpha=1.0, threshold=-1.0)
    query = _codes([[(1, [1, 1]), (2, [1, 1])]])
    s = ivf.scores(query.words, query.codes)
    g_q = (a + math.log(3)) ** -0.5
    assert s[0] == pytest.approx(a * g_q * (2 * a) ** -0.5)  # word 1 identical
    assert s[1] == 0  # word 2: all bits differ, u = -1
    assert s[2] == pytest.approx(a * g_q * a ** -0.5)
    # self-similarity is 1
    ivf = InvertedFile(db, 3, 2, alpha=3.0, threshold=0.0)
    assert ivf.scores(db.words[:2], db.codes[:2])[0] == pytest.approx(1.0)


def test_the_inverted_file_agrees_with_the_formula_on_random_codes(rng, monkeypatch):
    import landmark_retrieval.search.asmk as asmk

    monkeypatch.setattr(asmk, "CHUNK", 7)  # many small chunks: the chunking must not change a score
    k, dim, n = 12, 16, 30
    images = []
    for _ in range(n):
        words = np.sort(rng.choice(k, rng.integers(0, 6), replace=False))
        images.append([(int(w), rng.integers(0, 2, dim).tolist()) for w in words])
    packed = [np.packbits(np.array(b, np.uint8)) for im in images for _, b in im]
    db = AsmkCodes(np.array([w for im in images for w, _ in im], np.int32), np.array(packed, np.uint8).reshape(-1, 2),
                   np.cumsum([0] + [len(im) for im in images]))
    ivf = InvertedFile(db, k, dim, alpha=3.0, threshold=0.0)
    idf = idf_weights(db, k)
    query = images[3][:3] + [(11, [1] * dim)]
    q = AsmkCodes(np.array([w for w, _ in query], np.int32),
                  np.array([np.packbits(np.array(b, np.uint8)) for _, b in query], np.uint8).reshape(-1, 2),
                  np.array([0, len(query)]))
    order = np.argsort(q.words, kind="stable")
    scores = ivf.scores(q.words[order], q.codes[order])
    for i, image in enumerate(images):
        mine = dict(image)
        total = 0.0
        for word, bits in query:
            if word in mine:
                u = 1 - 2 * np.count_nonzero(np.array(bits) != np.array(mine[word])) / dim
                total += idf[word] * (u ** 3 if u > 0 else 0.0)
        norm_q, norm_i = sum(idf[w] for w, _ in query), sum(idf[w] for w, _ in image)
        expected = total / math.sqrt(norm_q * norm_i) if norm_q > 0 and norm_i > 0 else 0.0
        assert scores[i] == pytest.approx(expected, abs=1e-12), i


@pytest.mark.slow
def test_a_run_with_asmk_ranks_by_its_kernel_and_reuses_its_index(small_dataset, tmp_path):
    from landmark_retrieval.cli import main
    from landmark_retrieval.io.layout import read_stamp, search_index_path

    work = tmp_path / "w"
    args = ["run", "--data", str(small_dataset), "--work", str(work), "--out", str(tmp_path / "s.csv"), "--preset",
            "demo", "--workers", "1", "--json", "--set", "retrieve.index=asmk", "--set", "retrieve.asmk.num_words=64"]
    assert main(args) == 0
    index = search_index_path(work, "train", "asmk")
    assert index.is_file()
    first = (tmp_path / "s.csv").read_bytes()
    built = index.stat().st_mtime_ns
    (work / "retrieval.h5").unlink()
    assert main(args) == 0
    assert index.stat().st_mtime_ns == built and (tmp_path / "s.csv").read_bytes() == first
    assert read_stamp(index)["build"]["num_words"] == 64
    # another vocabulary: the index is built again, the ranking follows
    assert main(args[:-1] + ["retrieve.asmk.num_words=32"]) == 0
    assert read_stamp(index)["build"]["num_words"] == 32


def _scores_by_pair(work):
    import h5py

    with h5py.File(work / "retrieval.h5", "r") as f:
        q = [s.decode() if isinstance(s, bytes) else s for s in f["query_ids"][()]]
        db = [s.decode() if isinstance(s, bytes) else s for s in f["db_ids"][()]]
        idx, sc = f["indices"][()], f["scores"][()]
    return {(q[i], db[j]): float(sc[i, r]) for i in range(len(q)) for r, j in enumerate(idx[i])}, q, db


@pytest.mark.slow
def test_score_level_fusion_adds_the_weighted_global_cosine(small_dataset, tmp_path):
    """retrieve.asmk.global_weight=w: every score is the kernel plus w x the global cosine."""
    from landmark_retrieval.cli import main
    from landmark_retrieval.io.layout import feature_dir
    from landmark_retrieval.io.store import FeatureStore

    work = tmp_path / "w"
    base = ["retrieve", "--data", str(small_dataset), "--work", str(work), "--set", "retrieve.k=1000",
            "--set", "retrieve.index=asmk", "--set", "retrieve.asmk.num_words=32"]
    assert main(["extract", "--data", str(small_dataset), "--work", str(work), "--preset", "demo"]) == 0
    assert main(base) == 0
    kernel, q_ids, db_ids = _scores_by_pair(work)
    assert main(base + ["--set", "retrieve.asmk.global_weight=0.5"]) == 0
    fused, _, _ = _scores_by_pair(work)
    with FeatureStore(feature_dir(work, "test")) as t, FeatureStore(feature_dir(work, "train")) as d:
        _, q = t.globals(q_ids)
        _, db = d.globals(db_ids)
    cos = q.astype(np.float64) @ db.T.astype(np.float64)
    assert len(fused) == len(kernel) == len(q_ids) * len(db_ids)
    for (a, b), value in fused.items():
        assert value == pytest.approx(kernel[a, b] + 0.5 * cos[q_ids.index(a), db_ids.index(b)], abs=1e-5)
