"""Step 3: geometric verification of retrieved candidates with DEGENSAC.

For each test image and each of its ``num_to_rerank`` nearest train images: putative matches
by nearest neighbour of the test descriptors among the train descriptors (distance threshold,
optional ratio test / mutual check), then ``pydegensac.findHomography`` (seeded) inlier count.
Fewer than ``min_matches`` putative matches (default 5, i.e. "4 or fewer") give 0 inliers;
an estimator error gives 0 inliers and is logged.

Output ``WORK/verification.csv`` (``query_id,rank,db_id,num_matches,inliers``, written and read
with the ``csv`` module, so any id round-trips), appended one test image at a time in retrieval
order, so an interrupted run resumes at the next test image and gives the same file as an
uninterrupted one. Local features of a train image are read from the feature store (and
cached), never re-extracted.

pydegensac holds the GIL: work is spread over processes. Workers ignore Ctrl-C (the parent
stops them and keeps what is finished) and exit by themselves if the parent dies.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from .config import Config, VerifyConfig
from .features import Features

if TYPE_CHECKING:
    from .dataset import Dataset
from .layout import (
    VERIFICATION_COLUMNS,
    Retrieval,
    feature_dir,
    fingerprint,
    load_retrieval,
    load_verification,
    read_stamp,
    retrieval_db_split,
    retrieval_path,
    stamp_changes,
    verification_path,
    write_stamp,
)
from .progress import progress
from .store import FeatureStore, write_error, write_text_atomic

logger = logging.getLogger("landmark_retrieval")

__all__ = ["verify", "verify_pair", "match_descriptors", "estimate_homography", "PairResult",
           "load_verification", "verification_path"]

COLUMNS = VERIFICATION_COLUMNS


# --------------------------------------------------------------------------------------------
# Pure computation
# --------------------------------------------------------------------------------------------
def match_descriptors(desc0: np.ndarray, desc1: np.ndarray, max_distance: float = 0.9,
                      ratio_test: Optional[float] = None, mutual: bool = False,
                      max_matches: Optional[int] = None) -> np.ndarray:
    """Nearest-neighbour matches from ``desc0`` to ``desc1`` (unit-norm rows).

    Each row of ``desc0`` is matched to its nearest row of ``desc1`` (the first one on a tie)
    when their Euclidean distance is below ``max_distance`` (and, if set, below ``ratio_test``
    times the distance to the second nearest, which is as close as the nearest on a tie; and,
    if ``mutual``, when the row is also the nearest the other way, the first one on a tie).
    With ``max_matches``, only that many of them are kept: the closest (ties: the lower i0).

    Similarities are one float32 product ``desc0 @ desc1.T`` and distances
    ``sqrt(max(2 - 2 * similarity, 0))`` in float32. The selection needs only row and column
    maxima (no sort, no column-wise argmax), and gives exactly the matches of the
    straightforward computation (``argmax``, ``np.partition``, ``argmax(axis=0)``) on that
    product; the product itself is most of the time (1000 x 1000 x 128: ~2.6 ms on one core).

    Args:
        desc0: (N0, D) float32 query descriptors; desc1: (N1, D) float32 candidate descriptors.
        max_distance: keep matches closer than this (L2 between unit descriptors).
        ratio_test: Lowe's ratio (e.g. 0.85); None = off. It cannot reject when N1 == 1.
        mutual: keep mutual nearest neighbours only.
        max_matches: keep at most this many matches (the closest); None = all.

    Returns:
        (K, 2) int64 index pairs ``(i0, i1)``, ordered by i0.

    Raises:
        ValueError: the descriptors are not 2-D with the same D, or ``max_matches`` < 0.
    """
    if max_matches is not None and max_matches < 0:
        raise ValueError(f"match_descriptors: max_matches must be >= 0 or None, got {max_matches}")
    if len(desc0) == 0 or len(desc1) == 0:
        return np.zeros((0, 2), np.int64)
    d0, d1 = np.asarray(desc0, np.float32), np.asarray(desc1, np.float32)
    if d0.ndim != 2 or d1.ndim != 2 or d0.shape[1] != d1.shape[1]:
        raise ValueError(f"match_descriptors: desc0 and desc1 must be (N, D) arrays with the same D, "
                         f"got shapes {d0.shape} and {d1.shape}")
    return _select_matches(d0 @ d1.T, max_distance, ratio_test, mutual, max_matches)


def _select_matches(sim: np.ndarray, max_distance: float, ratio_test: Optional[float], mutual: bool,
                    max_matches: Optional[int]) -> np.ndarray:
    """The matches of :func:`match_descriptors` from the (N0, N1) float32 similarity matrix.

    ``sim`` is used as scratch space (entries are set to -inf and restored).
    """
    n0, n1 = sim.shape
    rows = np.arange(n0)
    nn = sim.argmax(axis=1)
    best = sim[rows, nn]
    dist = np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0))
    keep = dist < max_distance
    if ratio_test is not None and n1 >= 2 and keep.any():
        # the second largest similarity of each row, equal to the largest on a tie (what
        # np.partition(sim, n1 - 2, axis=1)[:, n1 - 2] gives): the maximum without the argmax
        sim[rows, nn] = -np.inf
        second = sim.max(axis=1)
        sim[rows, nn] = best
        dist2 = np.sqrt(np.maximum(2.0 - 2.0 * second, 0.0))
        keep &= dist < ratio_test * dist2
    if mutual and keep.any() and 4 * np.count_nonzero(keep) <= n1:
        # few rows left (after a ratio test): the argmax of just their columns, gathered as rows
        idx = np.flatnonzero(keep)
        keep[idx] = sim.T[nn[idx]].argmax(axis=1) == idx
    elif mutual and keep.any():
        # row i is the first argmax of its column j = nn[i] when sim[i, j] is the column's
        # maximum and no other row reaches it (else: the first row that reaches it); two
        # vectorised column maxima instead of a (much slower) column-wise argmax
        idx = np.flatnonzero(keep)
        cols = nn[idx]
        colmax = sim.max(axis=0)
        top = best[idx] == colmax[cols]
        ci, cj = idx[top], cols[top]
        sim[ci, cj] = -np.inf
        rest = sim.max(axis=0)[cj]
        sim[ci, cj] = best[ci]
        first = (rest < colmax[cj]) & (np.bincount(cj, minlength=n1)[cj] == 1)
        if not first.all():  # ties at a column's maximum (duplicated descriptors): rare
            tied = ~first
            ucols, inv = np.unique(cj[tied], return_inverse=True)
            first[tied] = sim[:, ucols].argmax(axis=0)[inv] == ci[tied]
        keep[:] = False
        keep[ci[first]] = True
    i0 = np.flatnonzero(keep)
    if max_matches is not None and len(i0) > max_matches:
        closest = np.argsort(-best[i0], kind="stable")[:max_matches]  # most similar; ties: lower i0
        i0 = np.sort(i0[closest])
    return np.stack([i0, nn[i0]], axis=1).astype(np.int64)


def estimate_homography(kpts0: np.ndarray, kpts1: np.ndarray, conf: VerifyConfig,
                        ) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """DEGENSAC homography between matched points.

    Args:
        kpts0, kpts1: (K, 2) float (x, y) coordinates of the K putative matches.
        conf: verification settings (threshold, confidence, iterations, seed, min_matches).

    Returns:
        ``(H, inlier_mask)``: H (3, 3) float64 mapping kpts0 to kpts1, or None when there are
        too few matches, no model or an estimator error; inlier_mask (K,) bool.

    Raises:
        ValueError: ``kpts0``/``kpts1`` are not (K, 2) arrays with the same K (shapes named).
    """
    shape0, shape1 = np.shape(kpts0), np.shape(kpts1)
    if len(shape0) != 2 or shape0[1:] != (2,) or len(shape1) != 2 or shape1[1:] != (2,) or shape0[0] != shape1[0]:
        raise ValueError(f"estimate_homography: kpts0 and kpts1 must be (K, 2) arrays of matched (x, y) points "
                         f"with the same K, got shapes {shape0} and {shape1}")
    k = len(kpts0)
    mask = np.zeros(k, bool)
    if k < max(conf.min_matches, 4):
        return None, mask
    import pydegensac

    try:
        H, inl = pydegensac.findHomography(
            np.ascontiguousarray(kpts0, np.float64), np.ascontiguousarray(kpts1, np.float64),
            float(conf.max_reprojection_error), float(conf.confidence), int(conf.max_iterations),
            seed=int(conf.seed),
        )
    except (np.linalg.LinAlgError, ValueError, RuntimeError) as exc:
        logger.warning("DEGENSAC failed on %d putative matches (counted as 0 inliers): %s: %s",
                       k, type(exc).__name__, exc)
        return None, mask
    mask = np.asarray(inl, bool).reshape(-1)
    if mask.shape[0] != k:
        return None, np.zeros(k, bool)
    if H is None or not np.any(mask) or not np.all(np.isfinite(H)):
        return None, np.zeros(k, bool)
    return np.asarray(H, np.float64), mask


@dataclass
class PairResult:
    """Verification of one image pair."""

    matches: np.ndarray  # (K, 2) int64 indices into (features0, features1)
    inlier_mask: np.ndarray  # (K,) bool
    homography: Optional[np.ndarray]  # (3, 3) mapping image0 (x, y) to image1, or None

    @property
    def num_inliers(self) -> int:
        return int(self.inlier_mask.sum())


def verify_pair(feats0: Features, feats1: Features, conf: VerifyConfig) -> PairResult:
    """Match two images' local features and count DEGENSAC inliers.

    Putative matches come from :func:`match_descriptors` with the settings of ``conf``
    (``max_descriptor_distance``, ``ratio_test``, ``mutual``, ``max_matches``); fewer than
    ``conf.min_matches`` give 0 inliers without running DEGENSAC.
    """
    matches = match_descriptors(feats0.descriptors, feats1.descriptors, conf.max_descriptor_distance,
                                conf.ratio_test, conf.mutual, conf.max_matches)
    H, mask = estimate_homography(feats0.keypoints[matches[:, 0]], feats1.keypoints[matches[:, 1]], conf)
    return PairResult(matches, mask, H)


# --------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------
class _Verifier:
    """Holds the open feature stores and a cache of train features (one per worker process)."""

    def __init__(self, work: str, conf: VerifyConfig, cache_size: int = 512):
        self.train = FeatureStore(feature_dir(work, retrieval_db_split(work)))  # train or index
        self.test = FeatureStore(feature_dir(work, "test"))
        self.conf = conf
        self.cache: "OrderedDict[str, Optional[Features]]" = OrderedDict()
        self.cache_size = cache_size

    def _train_features(self, image_id: str) -> Optional[Features]:
        if image_id in self.cache:
            self.cache.move_to_end(image_id)
            return self.cache[image_id]
        feats = self.train.local(image_id) if self.train.has_local(image_id) else None
        self.cache[image_id] = feats
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return feats

    def __call__(self, task: Tuple[str, List[str]]) -> Tuple[str, List[str], List[Tuple[int, int]]]:
        """Verify one test image against its candidates: ``(query_id, candidates, [(num_matches,
        inliers), ...])``; the query's features are read once for all its candidates."""
        query_id, candidates = task
        q = self.test.local(query_id) if self.test.has_local(query_id) else None
        results = []
        for db_id in candidates:
            t = self._train_features(db_id) if q is not None else None
            if q is None or t is None:
                results.append((0, 0))
                continue
            res = verify_pair(q, t, self.conf)
            results.append((len(res.matches), res.num_inliers))
        return query_id, candidates, results


_WORKER: Optional[_Verifier] = None


def _watch_parent(parent_pid: int, interval: float = 0.5) -> None:
    """End this worker process as soon as its parent is gone (kill -9 included)."""
    try:  # Linux: the kernel signals us when the parent dies
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(interval)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_worker(work: str, conf_dict: dict, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _watch_parent(parent_pid)
    global _WORKER
    _WORKER = _Verifier(work, VerifyConfig(**conf_dict))


def _run_chunk(tasks: List[Tuple[str, List[str]]]) -> List[Tuple[str, List[str], List[Tuple[int, int]]]]:
    """Verify a chunk of tasks in a worker process (the results of :meth:`_Verifier.__call__`)."""
    assert _WORKER is not None
    return [_WORKER(task) for task in tasks]


#: Environment of the worker processes: one BLAS / OpenMP thread each. There is a worker per
#: core; more threads per worker would compete for the same cores (and idle OpenBLAS threads
#: spin), so that a second worker gained little.
WORKER_THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                             "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}


@contextmanager
def _worker_environment():
    """Set :data:`WORKER_THREAD_ENV` while worker processes start (a spawned process copies the
    environment at its start, before its BLAS library reads it); the parent's is restored after."""
    saved = {name: os.environ.get(name) for name in WORKER_THREAD_ENV}
    os.environ.update(WORKER_THREAD_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _chunk_size(num_tasks: int, workers: int) -> int:
    """Test images per chunk sent to a worker: about 16 chunks per worker (at most 16 images),
    so that the workers finish together (a chunk of 10 candidates each takes ~40 ms per image)
    while the parent exchanges few messages."""
    return max(1, min(16, num_tasks // (workers * 16)))


TaskResult = Tuple[str, List[str], List[Tuple[int, int]]]  # (test id, candidate ids, [(matches, inliers)])


def _verify_tasks(work: Union[str, Path], vc: VerifyConfig, todo: List[Tuple[str, List[str]]], workers: int,
                  write: Callable[[TaskResult], None]) -> None:
    """Verify ``todo`` (test id, candidate ids) in ``workers`` processes (in this one when 1) and
    call ``write(result)`` with each task's result (see :meth:`_Verifier.__call__`), in order.

    Worker processes are spawned (no fork of a process that may hold TensorFlow threads), use
    one BLAS thread each and take chunks of :func:`_chunk_size` test images. An exception or an
    interruption stops them at once (finished results are already written).
    """
    if workers == 1:
        verifier = _Verifier(str(work), vc)
        for task in todo:
            write(verifier(task))
        return
    ctx = mp.get_context("spawn")
    pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                  initargs=(str(work), asdict(vc), os.getpid()))
    try:
        chunk = _chunk_size(len(todo), workers)
        # submitted by hand, not with pool.map: an interruption must not cancel the futures
        # under the executor's feet (CPython then prints a traceback). Workers start on submit:
        # they inherit "ignore Ctrl-C" and the one-thread environment.
        with _sigint_ignored(), _worker_environment():
            futures = [pool.submit(_run_chunk, todo[i:i + chunk]) for i in range(0, len(todo), chunk)]
        for fut in futures:
            for result in fut.result():
                write(result)
    except BaseException:
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True)


@contextmanager
def _sigint_ignored():
    """Ignore Ctrl-C while worker processes are started: they inherit the setting, so an early
    Ctrl-C never interrupts them half-way through their imports (one message, not a traceback
    per worker). The parent's handler is back as soon as they are started."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_pool(pool: cf.ProcessPoolExecutor) -> None:
    """Stop the workers now (unfinished tasks are dropped; finished ones are already written).

    A second Ctrl-C or SIGTERM during this short clean-up is ignored.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = {}
    if main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, signal.SIG_IGN)
    try:
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for proc in processes:
            try:
                proc.terminate()
            except Exception:
                pass
        for proc in processes:
            proc.join(timeout=5)
        # let the executor's manager thread notice and fail the pending futures before shutdown
        manager = getattr(pool, "_executor_manager_thread", None)
        if manager is not None:
            manager.join(timeout=10)
        pool.shutdown(wait=False)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------------------------
# Step entry point
# --------------------------------------------------------------------------------------------
def verification_settings(conf: VerifyConfig, work: Path) -> dict:
    """What verification results are computed from (their stamp): settings and retrieval."""
    settings = {k: v for k, v in asdict(conf).items() if k not in ("num_workers", "enabled")}
    settings["retrieval"] = fingerprint(read_stamp(retrieval_path(work)) or {})
    return settings


def _rows_text(query_id: str, candidates: List[str], results) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows([query_id, rank, c, m, i] for rank, (c, (m, i)) in enumerate(zip(candidates, results)))
    return buf.getvalue()


def _tasks(retrieval: Retrieval, n: int) -> List[Tuple[str, List[str]]]:
    return [
        (q, [retrieval.db_ids[j] for j in retrieval.indices[row, :n]])
        for row, q in enumerate(retrieval.query_ids)
    ]


def verify(conf: Config, data: Union[str, Path, "Dataset", None], work: Union[str, Path],
           overwrite: bool = False) -> Path:
    """Step 3: verify the ``conf.verify.num_to_rerank`` best candidates of every test image.

    ``data`` is not read (everything comes from the work directory): it is there so that every
    step has the signature ``step(conf, data, work, overwrite)``; None is fine.

    Resumes an interrupted run (the result is the same as an uninterrupted run's); settings
    that differ from the stored results' start over.

    Returns:
        Path of ``WORK/verification.csv``.
    """
    work = Path(work)
    vc = conf.verify
    out = verification_path(work)
    retrieval = load_retrieval(retrieval_path(work))
    tasks = _tasks(retrieval, vc.num_to_rerank)
    settings = verification_settings(vc, work)
    changes = stamp_changes(out, settings)
    done: Dict[str, Dict[str, Tuple[int, int]]] = {}
    if changes is None and not overwrite:
        done = load_verification(out)
    elif changes:
        logger.info("Verifying again: %s", "; ".join(changes))
    # keep only test images whose candidates were all verified; rewrite the file cleanly (atomically)
    expected = dict(tasks)
    done = {q: r for q, r in done.items() if q in expected and all(c in r for c in expected[q])}
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(COLUMNS)
    text = header.getvalue() + "".join(
        _rows_text(q, cands, [done[q][c] for c in cands]) for q, cands in tasks if q in done)
    if not (out.is_file() and out.read_text(encoding="utf-8") == text):  # untouched when nothing changes
        write_text_atomic(out, text)
    write_stamp(out, settings)
    todo = [t for t in tasks if t[0] not in done and t[1]]
    with FeatureStore(feature_dir(work, retrieval.db_split)) as train:
        candidates = {c for _, cands in todo for c in cands}
        missing = sum(1 for c in candidates if not train.has_local(c))
    if missing:
        logger.warning(
            "%d of %d candidate train images have no local features and get 0 inliers; with "
            "extract.train_local=candidates run `landmark-retrieval extract --candidates` (or `run`) first",
            missing, len(candidates))
    logger.info("Verifying %d candidates of %d test images (%d already done)",
                vc.num_to_rerank, len(todo), len(done))
    if not todo:
        return out
    workers = vc.num_workers or (os.cpu_count() or 1)
    workers = max(1, min(workers, len(todo)))
    with open(out, "a", newline="", encoding="utf-8") as fh, \
            progress(total=len(todo), desc="verify", unit="query") as bar:
        def write(result) -> None:
            q, cands, res = result
            try:
                fh.write(_rows_text(q, cands, res))
                fh.flush()
            except OSError as exc:
                raise write_error(out, exc) from exc
            bar.update(1)

        _verify_tasks(work, vc, todo, workers, write)
        try:
            os.fsync(fh.fileno())
        except OSError as exc:
            raise write_error(out, exc) from exc
    return out
