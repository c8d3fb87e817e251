"""The verification worker pool: test images' candidates verified in processes.

pydegensac holds the GIL, so work is spread over processes (spawned, never forked), this one
included, each with one BLAS thread. A verifier (one per process) holds the open feature stores and a cache of
database features; work goes out in chunks, and when none is left to hand out the calling process
takes back chunks still waiting in a worker's queue. Workers ignore Ctrl-C (the parent stops
them and keeps what is finished) and exit by themselves if the parent dies. Who verifies a pair
never changes its result.
"""
from __future__ import annotations

import concurrent.futures as cf
import inspect
import logging
import multiprocessing as mp
import multiprocessing.synchronize as mp_synchronize
import multiprocessing.util as mp_util
import os
import signal
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, replace
from multiprocessing import resource_tracker
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from ..config import VerifyConfig
from ..io.store import read_meta
from ..overrides import apply_settings
from .lightglue import LightGlueMatcher, features_backend
from .pairs import verify_pair

if TYPE_CHECKING:
    pass
from ..io.layout import feature_dir, retrieval_db_split
from ..io.store import FeatureStore

logger = logging.getLogger("landmark_retrieval")



class _Points(NamedTuple):
    """What verification reads of an image's local features (see :class:`Features`)."""

    keypoints: np.ndarray  # (N, 2) float32
    descriptors: np.ndarray  # (N, D) float32, or uint8 packed bits
    image_size: Optional[Tuple[int, int]] = None  # (width, height): read for the learned matcher only


class _Verifier:
    """Holds the open feature stores and a cache of train features (one per process that verifies).

    Only keypoints and descriptors are read (:meth:`FeatureStore.local_points`, half the time of
    all local features), and the image size for ``verify.matcher = lightglue``: at scale most
    candidates are read once, for one pair. With ``verify.max_keypoints``, the strongest features
    are selected as they are read (and cached), so pairs are matched without selecting again. The
    learned matcher is loaded once per process.
    """

    def __init__(self, work: str, conf: VerifyConfig, cache_size: int = 512):
        self.train = FeatureStore(feature_dir(work, retrieval_db_split(work)))  # train or index
        self.test = FeatureStore(feature_dir(work, "test"))
        self.conf = conf
        self.pair_conf = replace(conf, max_keypoints=None)  # features are capped when read
        self.cache: "OrderedDict[str, Optional[_Points]]" = OrderedDict()
        self.cache_size = cache_size
        self.matcher = None
        if conf.matcher == "lightglue":
            self.matcher = LightGlueMatcher(features_backend(read_meta(self.test.directory)), conf.lightglue)

    def _points(self, store: FeatureStore, image_id: str) -> _Points:
        keypoints, descriptors = store.local_points(image_id, self.conf.max_keypoints)
        size = store.image_size(image_id) if self.matcher is not None else None
        return _Points(keypoints, descriptors, size)

    def _train_features(self, image_id: str) -> Optional[_Points]:
        if image_id in self.cache:
            self.cache.move_to_end(image_id)
            return self.cache[image_id]
        feats = self._points(self.train, image_id) if self.train.has_local(image_id) else None
        self.cache[image_id] = feats
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return feats

    def __call__(self, task: Tuple[str, List[str]]) -> Tuple[str, List[str], List[Tuple[int, int]]]:
        """Verify one test image against its candidates: ``(query_id, candidates, [(num_matches,
        inliers), ...])``; the query's features are read once for all its candidates."""
        query_id, candidates = task
        q = self._points(self.test, query_id) if self.test.has_local(query_id) else None
        results = []
        for db_id in candidates:
            t = self._train_features(db_id) if q is not None else None
            if q is None or t is None:
                results.append((0, 0))
                continue
            res = verify_pair(q, t, self.pair_conf, self.matcher)  # type: ignore[arg-type]  # what matching reads
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
    if claims is not None:  # this worker has opened the pool's semaphores (see _unlink_semaphores)
        with claims.get_lock():
            claims[len(claims) - 1] += 1
    _watch_parent(parent_pid)
    global _WORKER, _CLAIMS
    vc = VerifyConfig()
    apply_settings(vc, conf_dict, "verify settings", "verify")
    _WORKER = _Verifier(work, vc)
    _CLAIMS = claims


_CLAIMS = None  # the worker's view of the chunk claims of verify_tasks (a shared int array)


def _run_chunk(index: int, tasks: List[Tuple[str, List[str]]]) -> Optional[List["TaskResult"]]:
    """Verify chunk ``index`` of :func:`verify_tasks` in a worker process: the results of
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


def verify_tasks(work: Union[str, Path], vc: VerifyConfig, todo: List[Tuple[str, List[str]]], workers: int,
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
    """:func:`verify_tasks` in this process and ``children`` worker processes."""
    ctx = mp.get_context("spawn")
    _start_resource_tracker()
    # per chunk, 1: a process has taken it; the last item counts the workers started
    claims = ctx.Array("i", len(chunks) + 1)
    pool = cf.ProcessPoolExecutor(children, mp_context=ctx, initializer=_init_worker,
                                  initargs=(work, asdict(vc), os.getpid(), claims))
    unlinked = False  # the semaphores' names are removed once every worker has opened them
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
            if not unlinked and claims[len(chunks)] >= children:
                unlinked = True
                _unlink_semaphores(claims.get_lock(), getattr(pool, "_call_queue", None),
                                   getattr(pool, "_result_queue", None))
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
    except BrokenProcessPool:
        _stop_pool(pool)
        raise RuntimeError("A verification worker process ended abruptly (killed, or out of memory): finished work "
                           "is kept; run the same command again to resume (with --set verify.num_workers=1 this "
                           "process verifies alone)") from None
    except BaseException:
        _stop_pool(pool)
        raise
    logger.debug("Verified %d of %d chunks in this process, the rest in %d workers", here, len(chunks), children)
    if all(fut.done() for fut in queued.values()):
        pool.shutdown(wait=True)
    else:  # chunks taken back that a worker has not reached (or a worker still starting)
        _stop_pool(pool)


def _leak_warning_filter() -> Optional[str]:
    """The ``-W`` filter that ignores exactly the resource tracker's warning "There appear to be N
    leaked semaphore objects to clean up at shutdown" (its category, module and line), or None
    when the tracker's source cannot be read."""
    try:
        lines, first = inspect.getsourcelines(resource_tracker.main)
    except (OSError, TypeError):
        return None
    for offset, line in enumerate(lines):
        if "warnings.warn(" in line and "leaked" in "".join(lines[offset:offset + 3]):
            return f"ignore::UserWarning:multiprocessing.resource_tracker:{first + offset}"
    return None


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (when it is not running yet) without its warning
    about leaked semaphores.

    The tracker unlinks the semaphores of a process killed before it could (kill -9, the OOM
    killer) and says so on stderr. :func:`_unlink_semaphores` leaves it nothing to do once the
    workers are started; this covers the second they take to start: the cleanup still happens,
    only that one warning is filtered (``PYTHONWARNINGS``, which the tracker reads at its start;
    this process's own environment is restored at once).
    """
    if os.name != "posix":  # Windows: no named semaphores, no tracker
        return
    option = _leak_warning_filter()
    saved = os.environ.get("PYTHONWARNINGS")
    if option is not None:
        os.environ["PYTHONWARNINGS"] = f"{saved},{option}" if saved else option
    try:
        resource_tracker.ensure_running()
    finally:
        if saved is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = saved


def _unlink_semaphores(*owners: object) -> int:
    """Remove the names of the named semaphores of ``owners`` (multiprocessing locks, or objects
    holding some such as the executor's queues) once every process that uses them has opened them.

    With the spawn start method, every multiprocessing lock is a named POSIX semaphore that
    multiprocessing unlinks when this process exits normally; if it is killed (kill -9, the OOM
    killer) the resource tracker unlinks them instead and prints "There appear to be N leaked
    semaphore objects to clean up at shutdown". Unlinked early (what multiprocessing does at exit:
    ``sem_unlink`` and unregistering from the tracker, once), the semaphores keep working in the
    processes that have them open and nothing is left to leak. No process may open them afterwards:
    call this only when the pool has started all its workers. Returns how many names were removed.
    """
    count = 0
    for owner in owners:
        if owner is None:
            continue
        locks = ([owner] if isinstance(owner, mp_synchronize.SemLock) else
                 [v for v in vars(owner).values() if isinstance(v, mp_synchronize.SemLock)])
        for lock in locks:
            for ref in weakref.getweakrefs(lock):
                cleanup = ref.__callback__
                if isinstance(cleanup, mp_util.Finalize):  # SemLock._cleanup(name), registered at creation
                    cleanup()  # runs once: unregistered, it will not run again at exit
                    count += 1
    logger.debug("Unlinked %d semaphore names of the verification pool", count)
    return count


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
