"""Nearest-neighbour searchers of the retrieve step (one registry: :data:`SEARCHERS`).

``retrieve.index`` names the searcher:

* ``exact`` -- exact inner-product top-k (:func:`landmark_retrieval.retrieve.knn`): in memory, or
  streamed from an on-disk float16 copy of the database (:class:`DiskMatrix`) in blocks of
  ``retrieve.stream_block`` rows, every query searched against each block, for bounded memory at
  GLR scale. Both give the same neighbours in the same order (descending score, ties: lower
  database row first) whatever the block sizes; scores agree to float32 rounding.
* ``ivfpq`` -- faiss ``IndexIVFPQ`` (approximate; trained on a seeded sample of the database;
  ``refine_factor`` x k candidates per query re-scored exactly from the database, k kept).
* ``hnsw`` -- faiss ``IndexHNSWFlat`` (approximate; built in one thread, so deterministic).
* ``inverted`` -- exact, through a scipy sparse inverted file of the database's non-zeros (pays
  for sparse vectors: BoW tf-idf with a large vocabulary; :mod:`landmark_retrieval.inverted`).

Approximate indexes are built on the database, saved in the work directory
(``layout.search_index_path``) with a stamp of what they were built from, and reused by later
runs. A query for which an approximate index returns fewer than k neighbours is searched exactly.

A searcher is ``fn(queries, database, k, context) -> (scores, indices)``:

    queries   (Q, D) float32
    database  (N, D) float16/float32 array, or a DiskMatrix
    k         neighbours per query (clipped to N)
    context   SearchContext: the retrieve options, where an index may be saved, ids, work dir
    returns   scores (Q, k') float32 descending, indices (Q, k') int64 rows of the database
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from .layout import fingerprint, stamp_changes, write_stamp
from .store import publish, write_error

logger = logging.getLogger("landmark_retrieval")

FAISS_HINT = "pip install landmark-retrieval[faiss]"
_HEADER = {"descr": "<f2", "fortran_order": False}


# --------------------------------------------------------------------------------------------
# The database as a float16 matrix on disk
# --------------------------------------------------------------------------------------------
class DiskMatrix:
    """A (N, D) float16 matrix in a ``.npy`` file, read in blocks with plain file reads (no
    memory map: the pages read stay in the OS cache, not in this process's resident memory)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(fh)
            self.offset = fh.tell()
        if dtype != np.float16 or fortran or len(shape) != 2:
            raise ValueError(f"{self.path} is not a float16 (N, D) matrix: delete it to build it again")
        self.shape: Tuple[int, int] = (int(shape[0]), int(shape[1]))
        if self.path.stat().st_size != self.offset + 2 * self.shape[0] * self.shape[1]:
            raise ValueError(f"{self.path} is truncated or damaged: delete it to build it again")
        self.dtype = np.dtype(np.float16)
        self.ndim = 2
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int, dtype: type = np.float32) -> np.ndarray:
        """Rows ``start:stop`` as a (rows, D) array of ``dtype``."""
        raw = self._read_raw(start, stop)
        return raw if dtype == np.float16 else raw.astype(dtype)

    def _read_raw(self, start: int, stop: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Rows ``start:stop`` as float16, read into ``out`` (a float16 array of at least that
        many rows, whose first rows are returned) when given."""
        start, stop = max(0, start), min(len(self), stop)
        rows = max(0, stop - start)
        raw = np.empty((rows, self.shape[1]), np.float16) if out is None else out[:rows]
        if raw.size:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset + start * self.shape[1] * 2)
                if fh.readinto(memoryview(raw).cast("B")) != raw.nbytes:
                    raise OSError(f"{self.path} is truncated: delete it to build it again")
        return raw

    def blocks(self, rows: int, dtype: type = np.float32,
               reuse: bool = False) -> Iterator[Tuple[int, np.ndarray]]:
        """``(start, block)`` for consecutive blocks of ``rows`` rows; the next block is read
        in a background thread while the caller works on the current one.

        With ``reuse``, the file is read into two float16 buffers allocated once, in turn, and a
        block is converted to ``dtype`` in the calling thread into one buffer allocated once: no
        fresh gigabyte of pages to fault in per block, memory ~2 float16 + 1 ``dtype`` block, and
        the conversion does not compete with a multi-threaded search of the previous block. A
        block is then valid only until the next one is asked for."""
        rows = max(1, int(rows))
        starts = list(range(0, len(self), rows))
        if not starts:
            return
        if not reuse:
            def load(n: int) -> np.ndarray:
                return self.read(starts[n], starts[n] + rows, dtype)
        else:
            shape = (min(rows, len(self)), self.shape[1])
            raws = [np.empty(shape, np.float16) for _ in range(min(2, len(starts)))]
            out = None if dtype == np.float16 else np.empty(shape, dtype)

            def load(n: int) -> np.ndarray:
                return self._read_raw(starts[n], starts[n] + rows, raws[n % len(raws)])
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(load, 0)
            for n, start in enumerate(starts):
                block = future.result()
                if n + 1 < len(starts):
                    future = pool.submit(load, n + 1)
                if reuse and out is not None:
                    np.copyto(out[:len(block)], block)
                    block = out[:len(block)]
                yield start, block
                del block

    def memmap(self) -> np.ndarray:
        """The whole matrix as a read-only memory map (random row access, e.g. for QE)."""
        return np.load(self.path, mmap_mode="r")

    def __getitem__(self, item: Any) -> np.ndarray:
        """Rows by index/slice/array (float16), through a memory map."""
        return np.asarray(self.memmap()[item])


def write_matrix(path: Path, n_rows: int, dim: int, blocks: Iterator[np.ndarray]) -> DiskMatrix:
    """Write ``blocks`` of rows (together (n_rows, dim)) as a float16 ``.npy`` file, atomically
    (a tmp file, fsynced, renamed): an interrupted build leaves no partial matrix.

    Raises:
        ValueError: the blocks hold NaN/inf values or do not add up to (n_rows, dim).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    written = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, dict(_HEADER, shape=(int(n_rows), int(dim))))
            for block in blocks:
                block = np.asarray(block)
                if block.ndim != 2 or block.shape[1] != dim:
                    raise ValueError(f"{path}: expected blocks of {dim} columns, got shape {block.shape}")
                bad = ~np.isfinite(block).all(axis=1)
                if bad.any():
                    raise ValueError(f"database row {written + int(np.flatnonzero(bad)[0])} has NaN or inf values "
                                     f"({int(bad.sum())} bad row(s) in this block); fix or drop those descriptors")
                fh.write(np.ascontiguousarray(block, np.float16).tobytes())
                written += len(block)
        if written != n_rows:
            raise ValueError(f"{path}: expected {n_rows} rows, got {written}")
        publish(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return DiskMatrix(path)


def cached_matrix(path: Path, settings: Dict[str, Any], n_rows: int, dim: int,
                  blocks: Callable[[], Iterator[np.ndarray]]) -> DiskMatrix:
    """The float16 matrix at ``path`` when its stamp matches ``settings`` (what it was built
    from), else built from ``blocks()`` and stamped."""
    path = Path(path)
    changes = stamp_changes(path, settings)
    if changes is None:
        try:
            matrix = DiskMatrix(path)
            if matrix.shape == (n_rows, dim):
                logger.info("Reusing the float16 database matrix %s", path)
                return matrix
        except (OSError, ValueError) as exc:
            logger.warning("Building %s again: %s", path, exc)
    elif changes:
        logger.info("Building the float16 database matrix again: %s", "; ".join(changes))
    logger.info("Writing the database (%d x %d) as float16 to %s", n_rows, dim, path)
    matrix = write_matrix(path, n_rows, dim, blocks())
    write_stamp(path, settings)
    return matrix


def sort_rows(scores: np.ndarray, indices: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Each row (Q, k) by descending score, ties: lower index first."""
    if scores.size == 0:
        return scores, indices
    order = np.lexsort((indices, -scores), axis=1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


def knn_streamed(queries: np.ndarray, matrix: DiskMatrix, k: int, block_size: int = 4096,
                 stream_block: int = 131_072, use_faiss: bool = True,
                 show_progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k of every query in a database on disk, read once in blocks of ``stream_block``
    rows (the next one read while the current one is searched); each block is searched for all
    queries and merged into the running top-k: with faiss, ``max(block_size, 16384)`` queries
    per call (faiss tiles the product itself), with numpy ``block_size`` at a time (a
    ``block_size x stream_block`` similarity block). Memory: about two float32 blocks of
    ``stream_block x D`` (two float16 read buffers and one converted block).

    Args:
        queries: (Q, D) float32, finite (checked by the caller); matrix: (N, D) float16 on disk.
        k: neighbours per query, 1 <= k <= N.

    Returns:
        scores (Q, k) float32 descending (ties: lower row first), indices (Q, k) int64.
    """
    from .progress import progress
    from .retrieve import _block_topk, _topk_rows

    faiss = None
    if use_faiss:
        try:
            import faiss  # type: ignore
        except ImportError:
            faiss = None
    nq, n = len(queries), len(matrix)
    best_v = np.zeros((nq, 0), np.float32)
    best_i = np.zeros((nq, 0), np.int64)
    total = -(-n // max(1, stream_block))
    if faiss is not None:
        block_size = max(block_size, 16384)
    for t, block in progress(matrix.blocks(stream_block, reuse=True), desc="retrieve", unit="block", total=total,
                             disable=not show_progress):
        kb = min(k, len(block))
        for s in range(0, nq, block_size):
            qb = queries[s:s + block_size]
            v, i = _block_topk(qb, block, kb, faiss)
            v = np.concatenate([best_v[s:s + block_size], v], axis=1)
            i = np.concatenate([best_i[s:s + block_size], i + t], axis=1)
            v, sel = _topk_rows(v, k)
            if best_v.shape[1] != k:  # the first block(s) hold fewer than k rows
                best_v = np.pad(best_v, ((0, 0), (0, v.shape[1] - best_v.shape[1])))
                best_i = np.pad(best_i, ((0, 0), (0, v.shape[1] - best_i.shape[1])))
            best_v[s:s + block_size], best_i[s:s + block_size] = v, np.take_along_axis(i, sel, axis=1)
    return best_v, best_i


# --------------------------------------------------------------------------------------------
# Searchers
# --------------------------------------------------------------------------------------------
@dataclass
class SearchContext:
    """What a searcher may need besides the vectors."""

    conf: Any  # the RetrieveConfig
    index_path: Optional[Callable[[str], Path]] = None  # searcher name -> file for its index; None: not saved
    database_key: Dict[str, Any] = field(default_factory=dict)  # what the database rows were computed from
    knn_args: Dict[str, Any] = field(default_factory=dict)  # block sizes etc. of the exact search
    work: Optional[Path] = None  # the work directory (searchers reading their own features)
    db_split: str = "train"
    query_ids: Sequence[str] = ()
    db_ids: Sequence[str] = ()


Searcher = Callable[[np.ndarray, Any, int, SearchContext], Tuple[np.ndarray, np.ndarray]]


def exact_search(queries: np.ndarray, database: Any, k: int, ctx: SearchContext) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k (in memory, or streamed from a :class:`DiskMatrix`)."""
    from .retrieve import knn

    return knn(queries, database, k, **ctx.knn_args)


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


def row_blocks(database: Any, rows: int) -> Iterator[Tuple[int, np.ndarray]]:
    """``(start, block)``: consecutive float32 blocks of ``rows`` rows of an array or DiskMatrix."""
    if isinstance(database, DiskMatrix):
        yield from database.blocks(rows)
    else:
        for s in range(0, len(database), rows):
            yield s, np.ascontiguousarray(database[s:s + rows], np.float32)


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


def _ann(name: str) -> Searcher:
    def search(queries: np.ndarray, database: Any, k: int, ctx: SearchContext) -> Tuple[np.ndarray, np.ndarray]:
        return ann_search(name, queries, database, k, ctx)

    search.__name__ = f"{name}_search"
    search.__doc__ = f"Approximate top-k with a faiss {name} index (see :func:`ann_search`)."
    return search


def inverted_search(queries: np.ndarray, database: Any, k: int, ctx: SearchContext) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-k through a sparse inverted file (BoW tf-idf; see :mod:`landmark_retrieval.inverted`)."""
    from .inverted import inverted_search as search

    return search(queries, database, k, ctx)


#: ``retrieve.index`` name -> searcher (register new methods here, and nowhere else)
SEARCHERS: Dict[str, Searcher] = {
    "exact": exact_search,
    "ivfpq": _ann("ivfpq"),
    "hnsw": _ann("hnsw"),
    "inverted": inverted_search,
}


def index_settings(conf: Any) -> Dict[str, Any]:
    """``retrieve.index`` and the options of its section (``retrieve.<index>``, when it has one):
    what a retrieval result's stamp records of the searcher."""
    section = getattr(conf, conf.index, None)
    return {"name": conf.index, "options": dataclasses.asdict(section) if dataclasses.is_dataclass(section) else None}


def get_searcher(name: str) -> Searcher:
    """The searcher ``retrieve.index`` names, or a ValueError listing the choices."""
    try:
        return SEARCHERS[str(name).strip().lower()]
    except KeyError:
        raise ValueError(f"retrieve.index: unknown searcher {name!r}; choose one of: {', '.join(SEARCHERS)}") from None


__all__ = ["SEARCHERS", "SearchContext", "DiskMatrix", "get_searcher", "exact_search", "ann_search",
           "cached_matrix", "write_matrix", "knn_streamed", "sort_rows", "index_settings"]
