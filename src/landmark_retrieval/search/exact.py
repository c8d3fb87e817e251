"""Nearest-neighbour searchers of the retrieve step (one registry: :data:`SEARCHERS`).

``retrieve.index`` names the searcher:

* ``exact`` -- exact inner-product top-k (:func:`landmark_retrieval.search.exact.knn`): in memory, or
  streamed from an on-disk float16 copy of the database (:class:`DiskMatrix`) in blocks of
  ``retrieve.stream_block`` rows, every query searched against each block, for bounded memory at
  GLR scale. Both give the same neighbours in the same order (descending score, ties: lower
  database row first) whatever the block sizes; scores agree to float32 rounding.
* ``ivfpq`` -- faiss ``IndexIVFPQ`` (approximate; trained on a seeded sample of the database;
  ``refine_factor`` x k candidates per query re-scored exactly from the database, k kept).
* ``hnsw`` -- faiss ``IndexHNSWFlat`` (approximate; built in one thread, so deterministic).
* ``inverted`` -- exact, through a scipy sparse inverted file of the database's non-zeros (pays
  for sparse vectors: BoW tf-idf with a large vocabulary; :mod:`landmark_retrieval.search.inverted`).

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

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from ..io.atomic import publish, write_error
from ..io.layout import stamp_changes, write_stamp
from ..io.progress import progress

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
    return knn(queries, database, k, **ctx.knn_args)


def row_blocks(database: Any, rows: int) -> Iterator[Tuple[int, np.ndarray]]:
    """``(start, block)``: consecutive float32 blocks of ``rows`` rows of an array or DiskMatrix."""
    if isinstance(database, DiskMatrix):
        yield from database.blocks(rows)
    else:
        for s in range(0, len(database), rows):
            yield s, np.ascontiguousarray(database[s:s + rows], np.float32)




def _topk_rows(sim: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k per row of a similarity block, sorted descending (ties: lower index first, also
    at the k-th place: of equal scores, the lower indices are kept)."""
    n = sim.shape[1]
    if k < n:
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        if k > 0:  # argpartition keeps arbitrary ones of the scores tied at the k-th place
            kept = np.take_along_axis(sim, part, axis=1)
            kth = kept.min(axis=1, keepdims=True)
            ragged = np.flatnonzero((sim == kth).sum(axis=1) > (kept == kth).sum(axis=1))
            if len(ragged):
                part = part.copy()
                for r in ragged:
                    cand = np.flatnonzero(sim[r] >= kth[r, 0])
                    part[r] = cand[np.lexsort((cand, -sim[r, cand]))[:k]]
    else:
        part = np.broadcast_to(np.arange(n), (sim.shape[0], n))
    vals = np.take_along_axis(sim, part, axis=1)
    order = np.lexsort((part, -vals), axis=1) if vals.size else np.zeros_like(part)
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(part, order, axis=1)


def _block_topk(qb: np.ndarray, block: np.ndarray, k: int, faiss=None) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k of a (B, D) float32 query block in a (M, D) float32 database block, k <= M, sorted
    descending, ties: lower row first (also at the k-th place). With faiss: ``faiss.knn`` for
    k + 1 neighbours; a row whose k-th and (k+1)-th scores tie (faiss keeps arbitrary ones of
    such ties) is computed again with numpy."""
    if faiss is None:
        return _topk_rows(qb @ block.T, k)
    if k >= len(block):
        v, i = faiss.knn(qb, block, k, metric=faiss.METRIC_INNER_PRODUCT)
        return sort_rows(v, i.astype(np.int64))
    v, i = faiss.knn(qb, block, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    tied = np.flatnonzero(v[:, k - 1] == v[:, k])
    v, i = np.ascontiguousarray(v[:, :k]), i[:, :k].astype(np.int64)
    for r in tied:
        v[r], i[r] = (x[0] for x in _topk_rows(qb[r:r + 1] @ block.T, k))
    return sort_rows(v, i)


def knn(queries: np.ndarray, database: Union[np.ndarray, DiskMatrix], k: int, block_size: int = 4096,
        db_block_size: int = 262_144, use_faiss: bool = True,
        show_progress: bool = False, stream_block: int = 131_072) -> Tuple[np.ndarray, np.ndarray]:
    """Exact k-nearest neighbours by inner product (cosine for unit rows).

    Neighbours are sorted by descending score; of equal scores the lower database row comes
    first (and is kept at the k-th place), whatever the block sizes.

    Args:
        queries: (Q, D) float32.
        database: (N, D) float32, or float16 to halve its memory (each block is converted to
            float32 when it is searched), or a float16 :class:`~landmark_retrieval.search.exact.DiskMatrix`
            on disk: streamed in blocks of ``stream_block`` rows, each searched for every query
            (:func:`landmark_retrieval.search.exact.knn_streamed`; same neighbours and order).
        k: neighbours per query; clipped to N.
        block_size: query rows per block; db_block_size: database rows per block, so at most
            ``block_size * db_block_size`` similarities (and one float32 database block) are in
            memory at once.
        use_faiss: use ``faiss.knn`` on each block when importable.

    Returns:
        ``scores`` (Q, k') float32 descending and ``indices`` (Q, k') int64, k' = min(k, N).

    Raises:
        TypeError: ``queries``/``database`` not numpy arrays of float16/32/64 (the dtype is
            named), ``k`` not an integer.
        ValueError: arrays that are not 2-D (the shape is named), a negative ``k``, or NaN/inf
            values (the first bad row and the count are named: faiss would
            return index -1 for such a row, i.e. silently the last train image).
    """
    streamed = isinstance(database, DiskMatrix)
    for name, arr in (("queries", queries), ("database", database)):
        if streamed and name == "database":  # checked for NaN/inf when it was written
            continue
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"knn: {name} must be a numpy array (rows = descriptors), not {type(arr).__name__}")
        if arr.ndim != 2:
            raise ValueError(f"knn: {name} must be a 2-D array (rows = descriptors), got shape {arr.shape}")
        if arr.dtype not in (np.float16, np.float32, np.float64):
            raise TypeError(f"knn: {name} must have dtype float16, float32 or float64, got {arr.dtype}")
        step = max(1, (1 << 24) // max(1, arr.shape[1]))  # rows per check: a 16 MB mask, not one of N x D
        bad_rows = [t + np.flatnonzero(~np.isfinite(arr[t:t + step]).all(axis=1)) for t in range(0, len(arr), step)]
        bad = np.concatenate(bad_rows) if bad_rows else np.zeros(0, np.int64)
        if len(bad):
            raise ValueError(f"knn: {name} row {int(bad[0])} has NaN or inf values ({len(bad)} bad row(s) "
                             f"of {len(arr)}); fix or drop those descriptors")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"knn: k must be an integer, not {type(k).__name__} {k!r}")
    if k < 0:
        raise ValueError(f"knn: k must be >= 0, got {k}")
    q = np.ascontiguousarray(queries, np.float32)
    db = database if database.dtype in (np.float16, np.float32) else database.astype(np.float32)
    nq, n = len(q), len(db)
    k = int(max(0, min(k, n)))
    if nq == 0 or k == 0:
        return np.zeros((nq, k), np.float32), np.zeros((nq, k), np.int64)
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"Query descriptors have dimension {q.shape[1]} but train descriptors {db.shape[1]}")
    if streamed:
        return knn_streamed(q, database, k, block_size, stream_block, use_faiss, show_progress)
    faiss = None
    if use_faiss:
        try:
            import faiss  # type: ignore
        except ImportError:
            faiss = None
    scores = np.empty((nq, k), np.float32)
    indices = np.empty((nq, k), np.int64)
    starts = range(0, nq, block_size)
    for s in progress(starts, desc="retrieve", unit="block", disable=not show_progress):
        qb = q[s:s + block_size]
        best_v = np.full((len(qb), 0), -np.inf, np.float32)
        best_i = np.zeros((len(qb), 0), np.int64)
        for t in range(0, n, db_block_size):
            block = np.ascontiguousarray(db[t:t + db_block_size], np.float32)
            kb = min(k, len(block))
            v, i = _block_topk(qb, block, kb, faiss)
            if n <= db_block_size:  # one block: the answer is final
                best_v, best_i = v, i
                break
            v = np.concatenate([best_v, v], axis=1)
            i = np.concatenate([best_i, i + t], axis=1)
            best_v, sel = _topk_rows(v, k)
            best_i = np.take_along_axis(i, sel, axis=1)
        scores[s:s + len(qb)], indices[s:s + len(qb)] = best_v, best_i
    return scores, indices
