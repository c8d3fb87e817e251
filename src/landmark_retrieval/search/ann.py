"""Approximate nearest neighbours with faiss: IVF-PQ and HNSW indexes over the database.

Each index is built once from the database descriptors, saved in the work directory with a stamp
of its settings, and re-scored exactly (the returned scores are true cosines). faiss is imported
only when an index is used (``pip install landmark-retrieval[faiss]``).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, Tuple

import numpy as np

from ..io.atomic import publish, write_error
from ..io.layout import fingerprint, stamp_changes, write_stamp
from .exact import FAISS_HINT, SearchContext, Searcher, exact_search, row_blocks, sort_rows

logger = logging.getLogger("landmark_retrieval")



def import_faiss(option: str) -> Any:
    """The faiss module, or an ImportError naming ``option`` and the fix."""
    try:
        import faiss  # type: ignore
    except ImportError as exc:
        raise ImportError(f"{option} needs faiss, which is not installed: {FAISS_HINT} "
                          "(or use retrieve.index=exact)") from exc
    return faiss


def _rows(database: Any, ids: np.ndarray) -> np.ndarray:
    """float32 rows ``ids`` (sorted unique) of an array or DiskMatrix."""
    return np.asarray(database[ids], np.float32)


class _Threads:
    """faiss's OpenMP thread count set for a ``with`` block (one thread: deterministic builds)."""

    def __init__(self, faiss: Any, n: int):
        self.faiss, self.n, self.old = faiss, n, None

    def __enter__(self) -> None:
        self.old = self.faiss.omp_get_max_threads()
        self.faiss.omp_set_num_threads(self.n)

    def __exit__(self, *exc: Any) -> None:
        self.faiss.omp_set_num_threads(self.old)


def _build_ivfpq(faiss: Any, database: Any, opts: Any, add_rows: int) -> Any:
    n, d = database.shape
    m = int(opts.m)
    if m < 1 or d % m:
        divisors = [x for x in range(1, max(1, min(m, d)) + 1) if d % x == 0]
        new = divisors[-1] if divisors else 1
        logger.warning("retrieve.ivfpq.m=%d does not divide the descriptor dimension %d: using %d", m, d, new)
        m = new
    rng = np.random.default_rng(int(opts.seed))
    n_train = min(n, int(opts.train_size))
    sample = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else np.arange(n)
    train = _rows(database, sample)
    nlist = max(1, min(int(opts.nlist), n_train // 39 or 1))
    nbits = int(opts.bits)
    if (1 << nbits) > n_train:
        nbits = max(1, int(math.log2(max(2, n_train))))
    if nlist != opts.nlist or nbits != opts.bits:
        logger.warning("retrieve.ivfpq: %d training vectors are too few for nlist=%d, bits=%d: using nlist=%d, "
                       "bits=%d", n_train, opts.nlist, opts.bits, nlist, nbits)
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = int(opts.seed)
    index.pq.cp.seed = int(opts.seed) + 1
    logger.info("Training IVF%d,PQ%dx%d on %d of %d database vectors", nlist, m, nbits, n_train, n)
    index.train(train)
    del train
    for _, block in row_blocks(database, add_rows):
        index.add(block)
    return index


def _build_hnsw(faiss: Any, database: Any, opts: Any, add_rows: int) -> Any:
    d = database.shape[1]
    index = faiss.IndexHNSWFlat(d, int(opts.m), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(opts.ef_construction)
    try:
        index.hnsw.rng = faiss.RandomGenerator(int(opts.seed))  # the level of each vector
    except (AttributeError, TypeError):  # pragma: no cover - older faiss: its fixed default seed
        pass
    logger.info("Building HNSW%d (efConstruction %d) on %d database vectors, one thread", opts.m,
                opts.ef_construction, len(database))
    with _Threads(faiss, 1):  # parallel insertion makes the graph depend on thread timing
        for _, block in row_blocks(database, add_rows):
            index.add(block)
    return index


_BUILDERS = {"ivfpq": _build_ivfpq, "hnsw": _build_hnsw}


def build_settings(name: str, opts: Any, database: Any, key: Dict[str, Any]) -> Dict[str, Any]:
    """The stamp of a saved index: its build options and what the database was computed from."""
    build = {k: v for k, v in vars(opts).items() if k not in ("nprobe", "ef_search", "refine_factor")}
    return {"index": name, "build": build, "shape": list(database.shape), "database": fingerprint(key)}


def load_or_build(name: str, database: Any, ctx: SearchContext) -> Any:
    """The faiss index ``name`` of ``database``: read from its file when built from the same
    database with the same options, else built (and saved when ``ctx.index_path`` is set)."""
    faiss = import_faiss(f"retrieve.index={name}")
    opts = getattr(ctx.conf, name)
    path = ctx.index_path(name) if ctx.index_path else None
    settings = build_settings(name, opts, database, ctx.database_key)
    if path is not None and stamp_changes(path, settings) is None:
        try:
            index = faiss.read_index(str(path))
            logger.info("Reusing the %s index %s", name, path)
            return index
        except RuntimeError as exc:
            logger.warning("Building %s again: %s", path, exc)
    index = _BUILDERS[name](faiss, database, opts, int(ctx.knn_args.get("stream_block") or 65536))
    if path is not None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            faiss.write_index(index, str(tmp))
            publish(tmp, path)
        except (OSError, RuntimeError) as exc:
            tmp.unlink(missing_ok=True)
            raise write_error(path, exc if isinstance(exc, OSError) else OSError(str(exc))) from exc
        write_stamp(path, settings)
    return index


def exact_scores(queries: np.ndarray, database: Any, indices: np.ndarray) -> np.ndarray:
    """Inner products (Q, k) float32 of each query with its neighbours ``indices`` (Q, k)."""
    out = np.zeros(indices.shape, np.float32)
    if indices.size == 0:
        return out
    step = max(1, (1 << 22) // max(1, indices.shape[1] * queries.shape[1]))
    for s in range(0, len(indices), step):
        ids = indices[s:s + step]
        flat = np.unique(ids)
        rows = _rows(database, flat)[np.searchsorted(flat, ids)]  # (b, k, D)
        out[s:s + step] = np.einsum("bkd,bd->bk", rows, queries[s:s + step])
    return out


def ann_search(name: str, queries: np.ndarray, database: Any, k: int,
               ctx: SearchContext) -> Tuple[np.ndarray, np.ndarray]:
    """Approximate top-k with the faiss index ``name`` (``ivfpq``/``hnsw``)."""
    n = len(database)
    k = int(max(0, min(int(k), n)))
    q = np.ascontiguousarray(queries, np.float32)
    if len(q) == 0 or k == 0:
        return np.zeros((len(q), k), np.float32), np.zeros((len(q), k), np.int64)
    if q.shape[1] != database.shape[1]:
        raise ValueError(f"Query descriptors have dimension {q.shape[1]} but database descriptors "
                         f"{database.shape[1]}")
    index = load_or_build(name, database, ctx)
    return query_index(name, index, q, database, k, ctx)


def query_index(name: str, index: Any, q: np.ndarray, database: Any, k: int,
                ctx: SearchContext) -> Tuple[np.ndarray, np.ndarray]:
    """Search a built index (search-time options of ``ctx.conf.<name>``); 1 <= k <= N."""
    n = len(database)
    opts = getattr(ctx.conf, name)
    if name == "ivfpq":  # PQ scores are approximate: score refine_factor x k candidates exactly, keep k
        index.nprobe = int(opts.nprobe)
        scores, indices = index.search(q, min(n, k * max(1, int(opts.refine_factor))))
        indices = indices.astype(np.int64)
        scores = np.where(indices >= 0, exact_scores(q, database, np.maximum(indices, 0)), -np.inf)
        scores, indices = sort_rows(scores.astype(np.float32), indices)
        scores, indices = np.ascontiguousarray(scores[:, :k]), np.ascontiguousarray(indices[:, :k])
    else:
        index.hnsw.efSearch = max(int(opts.ef_search), k)
        scores, indices = index.search(q, k)
        indices = indices.astype(np.int64)
    missing = np.flatnonzero((indices < 0).any(axis=1))
    if len(missing):
        logger.info("%s returned fewer than %d neighbours for %d queries: searching them exactly", name, k,
                    len(missing))
        scores[missing], indices[missing] = exact_search(q[missing], database, k, ctx)
    return sort_rows(scores.astype(np.float32), indices)


def ann_searcher(name: str) -> Searcher:
    def search(queries: np.ndarray, database: Any, k: int, ctx: SearchContext) -> Tuple[np.ndarray, np.ndarray]:
        return ann_search(name, queries, database, k, ctx)

    search.__name__ = f"{name}_search"
    search.__doc__ = f"Approximate top-k with a faiss {name} index (see :func:`ann_search`)."
    return search
