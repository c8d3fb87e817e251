"""Step 3: geometric verification of retrieved candidates with DEGENSAC.

For each test image and each of its ``num_to_rerank`` nearest train images: putative matches
by nearest neighbour of the test descriptors among the train descriptors (distance threshold,
optional ratio test / mutual check), then ``pydegensac.findHomography`` (seeded) inlier count.
Fewer than ``min_matches`` putative matches (default 5, i.e. "4 or fewer") give 0 inliers;
an estimator error gives 0 inliers and is logged. Binary descriptors (ORB, uint8 packed bits)
are matched by Hamming distance (OpenCV's brute-force matcher, ``max_hamming_distance``);
``verify.estimator`` (degensac, magsac) and ``verify.geometry`` (homography, fundamental)
choose the robust fit (see :mod:`landmark_retrieval.geometry`).

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from .config import Config, VerifyConfig
from .features import Features, is_binary
from .geometry import estimate_geometry

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
from .store import FeatureStore, strongest, write_error, write_text_atomic

logger = logging.getLogger("landmark_retrieval")

__all__ = ["verify", "verify_pair", "match_descriptors", "match_binary_descriptors", "estimate_homography",
           "estimate_geometry", "PairResult", "load_verification", "verification_path"]

COLUMNS = VERIFICATION_COLUMNS


# --------------------------------------------------------------------------------------------
# Pure computation
# --------------------------------------------------------------------------------------------
def match_descriptors(desc0: np.ndarray, desc1: np.ndarray, max_distance: float = 0.9,
                      ratio_test: Optional[float] = None, mutual: bool = False,
                      max_matches: Optional[int] = None, max_hamming_distance: int = 64) -> np.ndarray:
    """Nearest-neighbour matches from ``desc0`` to ``desc1`` (unit-norm rows).

    Binary descriptors (both uint8: packed bits, e.g. ORB) go to
    :func:`match_binary_descriptors` with ``max_hamming_distance`` instead of ``max_distance``.

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
        max_hamming_distance: binary descriptors only (see :func:`match_binary_descriptors`).

    Returns:
        (K, 2) int64 index pairs ``(i0, i1)``, ordered by i0.

    Raises:
        ValueError: the descriptors are not 2-D with the same D, or ``max_matches`` < 0, or
            one array is binary and the other not.
    """
    if max_matches is not None and max_matches < 0:
        raise ValueError(f"match_descriptors: max_matches must be >= 0 or None, got {max_matches}")
    if is_binary(desc0) or is_binary(desc1):
        return match_binary_descriptors(desc0, desc1, max_hamming_distance, ratio_test, mutual, max_matches)
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


def match_binary_descriptors(desc0: np.ndarray, desc1: np.ndarray, max_distance: int = 64,
                             ratio_test: Optional[float] = None, mutual: bool = False,
                             max_matches: Optional[int] = None) -> np.ndarray:
    """Nearest-neighbour matches between binary descriptors by Hamming distance.

    The rules of :func:`match_descriptors`, with Hamming distances (bits that differ) from
    OpenCV's brute-force matcher (``cv2.BFMatcher(cv2.NORM_HAMMING)``; ``knnMatch`` with k=2 for
    the ratio test): each row of ``desc0`` is matched to its nearest row of ``desc1`` (the first
    one on a tie) when they differ in at most ``max_distance`` bits (and, if set, in fewer than
    ``ratio_test`` times the bits of the second nearest, which is as close as the nearest on a
    tie; and, if ``mutual``, when the row is also the nearest the other way, the first one on a
    tie). With ``max_matches``, only the closest that many are kept (ties: the lower i0).

    Args:
        desc0: (N0, B) uint8 packed bits (ORB: B = 32, 256 bits); desc1: (N1, B) uint8.
        max_distance: keep matches that differ in at most this many bits.
        ratio_test: Lowe's ratio (e.g. 0.8); None = off. It cannot reject when N1 == 1.
        mutual: keep mutual nearest neighbours only.
        max_matches: keep at most this many matches (the closest); None = all.

    Returns:
        (K, 2) int64 index pairs ``(i0, i1)``, ordered by i0.

    Raises:
        ValueError: the descriptors are not 2-D uint8 arrays with the same B, or ``max_matches`` < 0.
    """
    if max_matches is not None and max_matches < 0:
        raise ValueError(f"match_binary_descriptors: max_matches must be >= 0 or None, got {max_matches}")
    d0, d1 = np.asarray(desc0), np.asarray(desc1)
    if d0.ndim != 2 or d1.ndim != 2 or d0.shape[1] != d1.shape[1] or d0.dtype != np.uint8 or d1.dtype != np.uint8:
        raise ValueError(f"match_binary_descriptors: desc0 and desc1 must be (N, B) uint8 arrays of packed bits "
                         f"with the same B, got {d0.dtype} {d0.shape} and {d1.dtype} {d1.shape} (float "
                         "descriptors cannot be matched with binary ones: extract both with the same backend)")
    n0, n1 = len(d0), len(d1)
    if n0 == 0 or n1 == 0:
        return np.zeros((0, 2), np.int64)
    import cv2

    d0, d1 = np.ascontiguousarray(d0), np.ascontiguousarray(d1)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    nn = np.zeros(n0, np.int64)
    dist = np.full(n0, np.inf)
    second = np.full(n0, np.inf)  # distance to the second nearest (inf: none)
    if ratio_test is not None and n1 >= 2:
        for knn in matcher.knnMatch(d0, d1, k=2):
            i = knn[0].queryIdx
            nn[i], dist[i] = knn[0].trainIdx, knn[0].distance
            if len(knn) > 1:
                second[i] = knn[1].distance
    else:
        for m in matcher.match(d0, d1):
            nn[m.queryIdx], dist[m.queryIdx] = m.trainIdx, m.distance
    keep = dist <= max_distance
    if ratio_test is not None and n1 >= 2:
        keep &= dist < ratio_test * second
    if mutual and keep.any():
        # the nearest row of desc0 of every column that some kept row chose (those columns only)
        cols = np.unique(nn[keep])
        back = np.full(n1, -1, np.int64)
        for m in matcher.match(np.ascontiguousarray(d1[cols]), d0):
            back[cols[m.queryIdx]] = m.trainIdx
        keep &= back[nn] == np.arange(n0)
    i0 = np.flatnonzero(keep)
    if max_matches is not None and len(i0) > max_matches:
        closest = np.argsort(dist[i0], kind="stable")[:max_matches]  # closest; ties: lower i0
        i0 = np.sort(i0[closest])
    return np.stack([i0, nn[i0]], axis=1).astype(np.int64)


def estimate_homography(kpts0: np.ndarray, kpts1: np.ndarray, conf: VerifyConfig,
                        ) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """Homography between matched points with ``conf.estimator`` (DEGENSAC by default).

    Args:
        kpts0, kpts1: (K, 2) float (x, y) coordinates of the K putative matches.
        conf: verification settings (estimator, threshold, confidence, iterations, seed, min_matches).

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
    return estimate_geometry(kpts0, kpts1, conf, geometry="homography")


@dataclass
class PairResult:
    """Verification of one image pair."""

    matches: np.ndarray  # (K, 2) int64 indices into (features0, features1)
    inlier_mask: np.ndarray  # (K,) bool
    homography: Optional[np.ndarray]  # (3, 3) mapping image0 (x, y) to image1, or None
    fundamental: Optional[np.ndarray] = None  # (3, 3) F, [x1, 1] F [x0, 1]^T = 0 (verify.geometry=fundamental)

    @property
    def num_inliers(self) -> int:
        return int(self.inlier_mask.sum())


def verify_pair(feats0: Features, feats1: Features, conf: VerifyConfig) -> PairResult:
    """Match two images' local features and count the inliers of a robust fit.

    Putative matches come from :func:`match_descriptors` with the settings of ``conf``
    (``max_descriptor_distance``, or ``max_hamming_distance`` for binary descriptors;
    ``ratio_test``, ``mutual``, ``max_matches``); fewer than ``conf.min_matches`` give 0 inliers
    without running the estimator. The model is ``conf.geometry`` fitted by ``conf.estimator``
    (:func:`landmark_retrieval.geometry.estimate_geometry`; default: a DEGENSAC homography).
    With ``conf.max_keypoints``, only each image's strongest that many features are matched
    (:func:`landmark_retrieval.store.strongest`); ``matches`` index the features as given.
    """
    if conf.max_keypoints is not None:
        return _verify_strongest(feats0, feats1, conf)
    matches = match_descriptors(feats0.descriptors, feats1.descriptors, conf.max_descriptor_distance,
                                conf.ratio_test, conf.mutual, conf.max_matches, conf.max_hamming_distance)
    model, mask = estimate_geometry(feats0.keypoints[matches[:, 0]], feats1.keypoints[matches[:, 1]], conf)
    if conf.geometry == "fundamental":
        return PairResult(matches, mask, None, model)
    return PairResult(matches, mask, model)


def _verify_strongest(feats0: Features, feats1: Features, conf: VerifyConfig) -> PairResult:
    """:func:`verify_pair` on each image's ``conf.max_keypoints`` strongest features, with the
    match indices mapped back to the features as given."""
    keep0, keep1 = (strongest(f.scores, conf.max_keypoints) for f in (feats0, feats1))
    res = verify_pair(feats0.rows(keep0), feats1.rows(keep1), replace(conf, max_keypoints=None))
    res.matches = np.stack([keep0[res.matches[:, 0]], keep1[res.matches[:, 1]]], axis=1)
    return res


# --------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------
class _Points(NamedTuple):
    """What verification reads of an image's local features (see :class:`Features`)."""

    keypoints: np.ndarray  # (N, 2) float32
    descriptors: np.ndarray  # (N, D) float32, or uint8 packed bits


class _Verifier:
    """Holds the open feature stores and a cache of train features (one per process that verifies).

    Only keypoints and descriptors are read (:meth:`FeatureStore.local_points`, half the time of
    all local features): at scale most candidates are read once, for one pair. With
    ``verify.max_keypoints``, the strongest features are selected as they are read (and cached),
    so pairs are matched without selecting again.
    """

    def __init__(self, work: str, conf: VerifyConfig, cache_size: int = 512):
        self.train = FeatureStore(feature_dir(work, retrieval_db_split(work)))  # train or index
        self.test = FeatureStore(feature_dir(work, "test"))
        self.conf = conf
        self.pair_conf = replace(conf, max_keypoints=None)  # features are capped when read
        self.cache: "OrderedDict[str, Optional[_Points]]" = OrderedDict()
        self.cache_size = cache_size

    def _train_features(self, image_id: str) -> Optional[_Points]:
        if image_id in self.cache:
            self.cache.move_to_end(image_id)
            return self.cache[image_id]
        feats = _Points(*self.train.local_points(image_id, self.conf.max_keypoints)) \
            if self.train.has_local(image_id) else None
        self.cache[image_id] = feats
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return feats

    def __call__(self, task: Tuple[str, List[str]]) -> Tuple[str, List[str], List[Tuple[int, int]]]:
        """Verify one test image against its candidates: ``(query_id, candidates, [(num_matches,
        inliers), ...])``; the query's features are read once for all its candidates."""
        query_id, candidates = task
        q = _Points(*self.test.local_points(query_id, self.conf.max_keypoints)) \
            if self.test.has_local(query_id) else None
        results = []
        for db_id in candidates:
            t = self._train_features(db_id) if q is not None else None
            if q is None or t is None:
                results.append((0, 0))
                continue
            res = verify_pair(q, t, self.pair_conf)  # type: ignore[arg-type]  # keypoints and descriptors suffice
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


def _init_worker(work: str, conf_dict: dict, parent_pid: int, claims=None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _watch_parent(parent_pid)
    global _WORKER, _CLAIMS
    _WORKER = _Verifier(work, VerifyConfig(**conf_dict))
    _CLAIMS = claims


_CLAIMS = None  # the worker's view of the chunk claims of _verify_tasks (a shared byte array)


def _run_chunk(index: int, tasks: List[Tuple[str, List[str]]]) -> Optional[List["TaskResult"]]:
    """Verify chunk ``index`` of :func:`_verify_tasks` in a worker process: the results of
    :meth:`_Verifier.__call__`, or None when the parent process took the chunk first."""
    assert _WORKER is not None
    if _CLAIMS is not None:
        with _CLAIMS.get_lock():
            if _CLAIMS[index]:
                return None
            _CLAIMS[index] = 1
    return [_WORKER(task) for task in tasks]


#: Environment of the worker processes: one BLAS / OpenMP / OpenCV thread each. There is a
#: process per core; more threads per process would compete for the same cores (and idle
#: OpenBLAS threads spin), so that a second worker gained little.
WORKER_THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                             "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                                             "OPENCV_FOR_THREADS_NUM")}


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


@contextmanager
def _one_blas_thread():
    """One BLAS thread in this process while it verifies (its setting is restored after): it
    verifies alongside the worker processes, one per core (with ``threadpoolctl``; without it
    the setting is left alone)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency; missing only in odd installs
        logger.debug("threadpoolctl is not installed: verifying with the BLAS library's own thread count")
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


#: Pairs per chunk of work (whole test images, at least one): small chunks keep every process
#: busy until the end (10 pairs take ~40 ms) for a few hundred bytes of messages each.
CHUNK_PAIRS = 10
#: Chunks queued ahead for each worker process, so that it never waits for this process (which
#: hands out chunks between chunks of its own).
PREFETCH = 4


def _chunks(todo: List[Tuple[str, List[str]]], pairs: int = CHUNK_PAIRS) -> List[List[Tuple[str, List[str]]]]:
    """``todo`` cut in order into chunks of whole tasks with at least ``pairs`` pairs (the last
    one: what is left)."""
    chunks: List[List[Tuple[str, List[str]]]] = []
    current: List[Tuple[str, List[str]]] = []
    count = 0
    for task in todo:
        current.append(task)
        count += len(task[1])
        if count >= pairs:
            chunks.append(current)
            current, count = [], 0
    if current:
        chunks.append(current)
    return chunks


TaskResult = Tuple[str, List[str], List[Tuple[int, int]]]  # (test id, candidate ids, [(matches, inliers)])


def _verify_tasks(work: Union[str, Path], vc: VerifyConfig, todo: List[Tuple[str, List[str]]], workers: int,
                  write: Callable[[TaskResult], None]) -> None:
    """Verify ``todo`` (test id, candidate ids) in ``workers`` processes, this one included, and
    call ``write(result)`` with each task's result (see :meth:`_Verifier.__call__`), in order.

    This process verifies with one BLAS thread (restored after). With ``workers`` > 1, it
    spawns ``workers - 1`` worker processes (never forks: it may hold TensorFlow's threads),
    with one BLAS thread each, and verifies while they start. Work goes out in chunks of about
    :data:`CHUNK_PAIRS` pairs (:func:`_chunks`), each worker kept :data:`PREFETCH` chunks ahead;
    when no chunk is left to hand out, this process takes back the chunks still waiting in a
    worker's queue (a shared claim per chunk: none is verified twice), so that all finish
    together and a job shorter than a worker's start-up is done here alone. Who verifies a pair
    does not change its result (DEGENSAC is seeded). An exception or an interruption stops the
    workers at once (finished results are already written).
    """
    with _one_blas_thread():
        if workers <= 1 or len(todo) <= 1:
            verifier = _Verifier(str(work), vc)
            for task in todo:
                write(verifier(task))
            return
        _verify_alongside(str(work), vc, _chunks(todo), workers - 1, write)


def _verify_alongside(work: str, vc: VerifyConfig, chunks: List[List[Tuple[str, List[str]]]], children: int,
                      write: Callable[[TaskResult], None]) -> None:
    """:func:`_verify_tasks` in this process and ``children`` worker processes."""
    ctx = mp.get_context("spawn")
    claims = ctx.Array("b", len(chunks))  # 1: a process has taken the chunk
    pool = cf.ProcessPoolExecutor(children, mp_context=ctx, initializer=_init_worker,
                                  initargs=(work, asdict(vc), os.getpid(), claims))
    queued: Dict[int, cf.Future] = {}  # chunks handed to a worker whose result is not collected
    finished: Dict[int, List[TaskResult]] = {}  # results not written yet (an earlier chunk is not finished)
    handed = written = here = 0  # chunks handed out (to a worker or taken here), written, verified here

    def hand_out() -> None:
        nonlocal handed
        while handed < len(chunks) and len(queued) < PREFETCH * children:
            queued[handed] = pool.submit(_run_chunk, handed, chunks[handed])
            handed += 1

    try:
        # submitted by hand, not with pool.map: an interruption must not cancel the futures
        # under the executor's feet (CPython then prints a traceback). Workers start on the
        # first submissions: they inherit "ignore Ctrl-C" and the one-thread environment.
        with _sigint_ignored(), _worker_environment():
            hand_out()
        verifier = _Verifier(work, vc)
        while True:
            for index in [i for i, fut in queued.items() if fut.done()]:
                result = queued.pop(index).result()
                if result is not None:  # None: taken back by this process
                    finished[index] = result
            while written in finished:
                for result in finished.pop(written):
                    write(result)
                written += 1
            if written == len(chunks):
                break
            hand_out()
            if handed < len(chunks):
                mine = handed
                handed += 1
            else:
                mine = _take_back(claims, list(queued))
                if mine is None:  # the workers are on the last chunks: wait for one
                    cf.wait(list(queued.values()), return_when=cf.FIRST_COMPLETED)
                    continue
            finished[mine] = [verifier(task) for task in chunks[mine]]
            here += 1
    except BaseException:
        _stop_pool(pool)
        raise
    logger.debug("Verified %d of %d chunks in this process, the rest in %d workers", here, len(chunks), children)
    if all(fut.done() for fut in queued.values()):
        pool.shutdown(wait=True)
    else:  # chunks taken back that a worker has not reached (or a worker still starting)
        _stop_pool(pool)


def _take_back(claims, indices: List[int]) -> Optional[int]:
    """Claim the last of the chunks ``indices`` (queued for workers) that no worker has started,
    for this process; None when every one is started (or the claims are busy for a second)."""
    lock = claims.get_lock()
    if not lock.acquire(timeout=1.0):
        return None
    try:
        for index in sorted(indices, reverse=True):
            if not claims[index]:
                claims[index] = 1
                return index
        return None
    finally:
        lock.release()


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
#: verify options added after results were first stamped (see :func:`verification_settings`);
#: the default of each reproduces the results verified before it existed: a stamp without it
#: counts as that default (``layout.stamp_changes(absent=...)``), so an upgrade re-verifies nothing
LATER_OPTIONS = ("max_matches", "max_hamming_distance", "estimator", "geometry", "max_keypoints")


def verification_settings(conf: VerifyConfig, work: Path) -> dict:
    """What verification results are computed from (their stamp): settings and retrieval.

    Options added later (:data:`LATER_OPTIONS`) are left out at their default value, so that
    results verified before they existed stay current (the same inliers).
    """
    settings = {k: v for k, v in asdict(conf).items() if k not in ("num_workers", "enabled")}
    defaults = asdict(VerifyConfig())
    for key in LATER_OPTIONS:
        if key in settings and settings[key] == defaults[key]:
            del settings[key]
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
    changes = stamp_changes(out, settings, absent={k: getattr(VerifyConfig(), k) for k in LATER_OPTIONS})
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
