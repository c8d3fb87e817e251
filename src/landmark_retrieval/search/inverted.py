"""Exact inner-product search through an inverted file: the ``inverted`` searcher of the
retrieve step (``retrieve.index=inverted``, registered in :data:`landmark_retrieval.search.SEARCHERS`).

For sparse global descriptors, above all bag-of-words tf-idf vectors
(``extract.global_descriptor=bow``, :class:`landmark_retrieval.backends.aggregators.BowAggregator`):
the database is held as a scipy CSR matrix (N, D) -- for each image only its non-zero words --
and a block of queries is multiplied by its transpose, so only database images sharing a word
with the query are touched. The result is the exact top-k of the dense product (descending
score, ties: lower database row first), including images sharing no word (score 0) when fewer
than k images share one; scores agree with the dense product up to float32 rounding.

It pays when the vectors are sparse: a vocabulary much larger than the keypoints of an image
(e.g. ``extract.bow.num_words=65536`` with 1,000 keypoints: < 2 % non-zeros). With a small
vocabulary (1,024 words, ~60 % non-zeros), and for dense descriptors (VLAD, Fisher, DELG, after
PCA-whitening), the dense search (``retrieve.index=exact``) is faster; the searcher logs the
density it finds.
"""
from __future__ import annotations

import logging
from typing import Any, Tuple

import numpy as np

from .exact import row_blocks

logger = logging.getLogger("landmark_retrieval")



def to_csr(database: Any, rows: int = 65536):
    """A (N, D) array (float16/32) or DiskMatrix as a scipy CSR float32 matrix of its non-zeros,
    converted ``rows`` rows at a time (memory: the sparse matrix and one dense block)."""
    from scipy import sparse

    n, d = database.shape
    parts = [sparse.csr_matrix(block) for _, block in row_blocks(database, max(1, int(rows)))]
    if not parts:
        return sparse.csr_matrix((n, d), dtype=np.float32)
    out = sparse.vstack(parts, format="csr").astype(np.float32)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _row_topk(scores: np.ndarray, cols: np.ndarray, k: int, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k of one query given its non-zero scores at database rows ``cols`` (all others 0)."""
    if (scores > 0).sum() < k or (scores < 0).any():  # implicit zeros may be among the k best
        free = np.arange(min(n, k + len(cols)))
        zeros = free[~np.isin(free, cols)][:k]
        scores = np.concatenate([scores, np.zeros(len(zeros), np.float32)])
        cols = np.concatenate([cols, zeros])
    order = np.lexsort((cols, -scores))[:k]
    return scores[order], cols[order]


def sparse_knn(queries: Any, database: Any, k: int, block_size: int = 1024) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with sparse products.

    Args:
        queries: (Q, D) float32 array or scipy sparse matrix.
        database: (N, D) scipy CSR matrix (see :func:`to_csr`).
        k: neighbours per query (clipped to N).
        block_size: queries per sparse product (memory: their non-zero similarities).

    Returns:
        scores (Q, k') float32 descending (ties: lower row first), indices (Q, k') int64,
        k' = min(k, N): the top-k of the dense product ``queries @ database.T``.
    """
    from scipy import sparse

    n = database.shape[0]
    nq = queries.shape[0]
    k = int(max(0, min(int(k), n)))
    scores = np.zeros((nq, k), np.float32)
    indices = np.zeros((nq, k), np.int64)
    if nq == 0 or k == 0:
        return scores, indices
    if queries.shape[1] != database.shape[1]:
        raise ValueError(f"Query descriptors have dimension {queries.shape[1]} but database descriptors "
                         f"{database.shape[1]}")
    db_t = sparse.csr_matrix(database, dtype=np.float32).T.tocsr()  # (D, N): the inverted lists
    q_all = sparse.csr_matrix(queries, dtype=np.float32)
    for s in range(0, nq, max(1, int(block_size))):
        sim = (q_all[s:s + block_size] @ db_t).tocsr()
        sim.eliminate_zeros()
        for r in range(sim.shape[0]):
            lo, hi = sim.indptr[r], sim.indptr[r + 1]
            v, i = _row_topk(sim.data[lo:hi].astype(np.float32), sim.indices[lo:hi].astype(np.int64), k, n)
            scores[s + r], indices[s + r] = v, i
    return scores, indices


def inverted_search(queries: np.ndarray, database: Any, k: int, ctx: Any) -> Tuple[np.ndarray, np.ndarray]:
    """The ``inverted`` searcher (signature of :data:`landmark_retrieval.search.SEARCHERS`):
    queries (Q, D) float32, database (N, D) array or DiskMatrix -> scores (Q, k') float32,
    indices (Q, k') int64, exactly as the dense search (see the module docstring)."""
    q = np.ascontiguousarray(queries, np.float32)
    if len(q) and not np.isfinite(q).all():
        bad = np.flatnonzero(~np.isfinite(q).all(axis=1))
        raise ValueError(f"inverted search: query row {int(bad[0])} has NaN or inf values ({len(bad)} bad row(s))")
    db = to_csr(database, int((getattr(ctx, "knn_args", None) or {}).get("db_block_size") or 65536))
    if db.shape[0] and not np.isfinite(db.data).all():
        raise ValueError("inverted search: the database has NaN or inf values; fix or drop those descriptors")
    density = db.nnz / max(1, db.shape[0] * db.shape[1])
    logger.info("Inverted file: %d database vectors, %.1f%% non-zero%s", db.shape[0], 100 * density,
                " (dense vectors: retrieve.index=exact is faster)" if density > 0.1 else "")
    block = int(getattr(getattr(ctx, "conf", None), "block_size", 1024) or 1024)
    return sparse_knn(q, db, k, block_size=min(block, 1024))
