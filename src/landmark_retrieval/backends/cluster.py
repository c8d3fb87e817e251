"""Feature extraction on a Dask cluster: ``run.cluster`` (``--cluster ADDRESS``).

Install with ``pip install "landmark-retrieval[distributed]"``. Start a scheduler and workers
(one worker process per GPU or per core group, one thread each: each worker loads the model
once), e.g.::

    dask scheduler                                     # on one machine: tcp://HOST:8786
    dask worker tcp://HOST:8786 --nworkers 2 --nthreads 1   # on every machine
    landmark-retrieval extract --data DATA --work WORK --cluster tcp://HOST:8786

or ``--cluster local:N`` for N worker processes on this machine. The dataset must be readable
at the same path on every worker (a shared or replicated folder); the work directory only by
the client (this process).

How it runs, in Dask's terms (never a scheduler of our own):

* the client splits the images still to extract (the same list as a local run: resumable)
  into chunks of at most ``extract.shard_size`` images, about four per worker thread at least;
* a task extracts one chunk on a worker with :func:`landmark_retrieval.backends.extraction.extract_split`,
  the local code path itself, into a scratch store in the worker's local directory, and returns
  the finished shard file (bytes); the backend is built once per worker (thread) and cached
  there, so a model is loaded once per worker, not per task;
* the client writes every returned shard into the work directory like a local run (``*.tmp``,
  validated, renamed): the stores, failures included, are those of a local run, keyed by image
  id, and an interrupted client loses only the chunks in flight;
* back-pressure: at most two chunks per worker thread are submitted at a time; the next one
  when a result is written, so neither the cluster nor the client holds more than that;
* a worker that dies (killed, out of memory) loses its chunk: the scheduler runs it again on
  another worker (Dask's ``allowed-failures``, 3 by default); a task that raises is retried twice.

The codebook of aggregating backends (VLAD) is fitted on the client after every chunk is in,
on all images, as in a local run.
"""
from __future__ import annotations

import contextvars
import copy
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..features import Features
from ..io.atomic import publish, write_error
from ..io.dataset import Dataset
from ..io.progress import progress
from ..io.store import shard_counts, validate_shard
from .base import Backend, GlobalAggregator
from .extraction import extract_split
from .registry import BACKENDS, BackendInfo, backend_info, make_backend

if TYPE_CHECKING:
    from ..config import Config, ExtractConfig
    from ..io.dataset import Dataset

logger = logging.getLogger("landmark_retrieval")


INSTALL = "pip install 'landmark-retrieval[distributed]'"
_CLIENTS: Dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _distributed():
    try:
        import distributed
    except ImportError:
        raise RuntimeError(f"run.cluster needs Dask distributed: {INSTALL} (or --set run.cluster=none to extract "
                           "in this process)") from None
    return distributed


def connect(address: str):
    """A ``distributed.Client`` for ``address`` (kept for the life of the process and reused).

    ``local`` or ``local:N`` starts a local cluster of N worker processes (default: one per
    core), one thread each.

    Raises:
        RuntimeError: Dask is not installed, or the scheduler cannot be reached (with the fix).
    """
    distributed = _distributed()
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(address)
        if client is not None and client.status == "running":
            return client
        if address == "local" or address.startswith("local:"):
            n = address.partition(":")[2]
            if n and not n.isdigit():
                raise ValueError(f"run.cluster: expected local or local:N (N worker processes), got {address!r}")
            cluster = distributed.LocalCluster(n_workers=int(n) if n else None, threads_per_worker=1,
                                               processes=True, dashboard_address=None)
            client = distributed.Client(cluster)
        else:
            try:
                # Dask's connect timeout (30 s unless configured: DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT)
                import dask

                client = distributed.Client(address, timeout=dask.config.get("distributed.comm.timeouts.connect"))
            except (OSError, TimeoutError, ValueError) as exc:
                raise RuntimeError(
                    f"Cannot reach the Dask scheduler at {address!r} (run.cluster): {exc}. Start one (`dask "
                    f"scheduler`, then `dask worker {address} --nthreads 1` on each machine), fix the address, or "
                    "--set run.cluster=none to extract in this process") from None
        _CLIENTS[address] = client
        logger.info("Dask cluster %s: %d workers, %d threads", address, len(client.nthreads()),
                    sum(client.nthreads().values()))
        return client


def disconnect() -> None:
    """Close the clients :func:`connect` opened (and the local clusters it started)."""
    with _CLIENTS_LOCK:
        for address, client in list(_CLIENTS.items()):
            cluster = getattr(client, "cluster", None) if address.startswith("local") else None
            client.close()
            if cluster is not None:
                cluster.close()
            del _CLIENTS[address]


def cluster_engine(conf: "Config") -> Optional["DaskEngine"]:
    """The engine of ``conf.run.cluster``, or None (extract in this process)."""
    address = getattr(getattr(conf, "run", None), "cluster", None)
    return DaskEngine(address) if address else None


class RemoteBackend(Backend):
    """The client's stand-in for a backend that runs on the workers: its name, settings,
    description (the stores' ``meta.json``) and aggregator, computed on a worker; no model here."""

    def __init__(self, conf: "ExtractConfig", name: str, description: dict,
                 aggregator: Optional[GlobalAggregator], local_dim: int):
        self.conf = conf
        self.name = name
        self._description = description
        self.aggregator = aggregator
        self.local_dim = local_dim

    def describe(self) -> dict:
        return copy.deepcopy(self._description)

    def extract(self, image: np.ndarray, local: bool = True, global_: bool = True) -> Features:
        raise RuntimeError(f"The {self.name} backend runs on the cluster's workers (run.cluster); pass an engine to "
                           "the extract step, or --set run.cluster=none to extract in this process")


# ----------------------------------------------------------------------------------------------
# On the workers
# ----------------------------------------------------------------------------------------------
_WORKER_BACKENDS: Dict[Tuple[str, int], Backend] = {}
_WORKER_LOCK = threading.Lock()
_IN_TASK: "contextvars.ContextVar[bool]" = contextvars.ContextVar("landmark_retrieval_cluster_task", default=False)


class _TaskLogFilter(logging.Filter):
    """Inside a task, keep the package's warnings (failed images) and drop its per-chunk info lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not _IN_TASK.get()


def _quiet_tasks() -> None:
    if not any(isinstance(f, _TaskLogFilter) for f in logger.filters):
        logger.addFilter(_TaskLogFilter())


def _worker_backend(conf: "ExtractConfig", info: BackendInfo) -> Backend:
    """The backend of ``conf``, built once per worker thread (a model is loaded once)."""
    key = (json.dumps(dataclasses.asdict(conf), sort_keys=True, default=str), threading.get_ident())
    with _WORKER_LOCK:
        backend = _WORKER_BACKENDS.get(key)
        if backend is None:
            BACKENDS.setdefault(info.name, info)  # a backend registered in the client's process only
            backend = _WORKER_BACKENDS[key] = make_backend(conf)
        return backend


def loaded_backends() -> int:
    """Backends built in this (worker) process (tests: one per worker thread)."""
    return len(_WORKER_BACKENDS)


def _describe(conf: "ExtractConfig", info: BackendInfo) -> Tuple[str, dict, Optional[GlobalAggregator], int]:
    backend = _worker_backend(conf, info)
    return backend.name, backend.describe(), backend.aggregator, int(backend.local_dim)


def _scratch_root() -> Optional[str]:
    try:
        from distributed import get_worker

        return get_worker().local_directory
    except (ImportError, ValueError, AttributeError):
        return None


def _chunk_dataset(root: str, task: str, split: str, items: Sequence[Tuple[str, str]]) -> "Dataset":
    """A dataset holding just the chunk's images of one split, at the client's paths."""
    import pandas as pd

    ids = [i for i, _ in items]
    paths = {i: Path(p) for i, p in items}
    train = pd.DataFrame({"id": pd.Series(ids if split == "train" else [], dtype=object),
                          "landmark_id": np.zeros(len(ids) if split == "train" else 0, np.int64)})
    return Dataset(root=Path(root), train=train, test_ids=ids if split == "test" else [], task=task,
                   index_ids=ids if split == "index" else [], _test_paths=paths if split == "test" else {},
                   _train_paths=paths if split == "train" else {}, _index_paths=paths if split == "index" else {})


def _extract_chunk(conf: "ExtractConfig", info: BackendInfo, root: str, task: str, split: str,
                   items: Sequence[Tuple[str, str]], local: bool, global_: bool, num_workers: int,
                   half_precision: bool, max_pixels: Optional[int]) -> List[bytes]:
    """A task: extract one chunk into a scratch store on the worker; return its shard file(s)."""
    _quiet_tasks()
    token = _IN_TASK.set(True)
    try:
        backend = _worker_backend(conf, info)
        dataset = _chunk_dataset(root, task, split, items)
        with tempfile.TemporaryDirectory(prefix="lr-extract-", dir=_scratch_root()) as tmp:
            directory = Path(tmp) / "features" / split
            store = extract_split(backend, dataset, split, directory, num_workers=num_workers,
                                  shard_size=len(items) + 1, half_precision=half_precision,
                                  ids=[i for i, _ in items], local=local, global_=global_, max_pixels=max_pixels)
            store.close()
            return [path.read_bytes() for path in sorted(directory.glob("part-*.h5"))]
    finally:
        _IN_TASK.reset(token)


# ----------------------------------------------------------------------------------------------
# On the client
# ----------------------------------------------------------------------------------------------
def _tag(split: str, ids: Sequence[str]) -> str:
    return hashlib.sha1("\n".join([split, *ids]).encode("utf-8", "surrogatepass")).hexdigest()[:16]


class DaskEngine:
    """Extracts the images of a split on a Dask cluster (see the module docstring).

    Args:
        cluster: a scheduler address (``tcp://host:8786``), ``local[:N]``, or a connected
            ``distributed.Client``.
        chunk_size: images per task (default: ``extract.shard_size``, fewer when there are
            not four tasks per worker thread).
        max_in_flight: tasks submitted at a time (default: two per worker thread).
        retries: retries of a task that raises (a dead worker's task is rescheduled by Dask).
    """

    def __init__(self, cluster: Union[str, Any], chunk_size: Optional[int] = None,
                 max_in_flight: Optional[int] = None, retries: int = 2):
        self.cluster = cluster
        self.chunk_size = chunk_size
        self.max_in_flight = max_in_flight
        self.retries = retries

    def client(self):
        return connect(self.cluster) if isinstance(self.cluster, str) else self.cluster

    def __repr__(self) -> str:
        return f"DaskEngine({self.cluster if isinstance(self.cluster, str) else 'client'})"

    def backend(self, conf: "ExtractConfig") -> RemoteBackend:
        """The stand-in of ``conf``'s backend, described by a worker (which keeps it loaded)."""
        info = backend_info(conf.backend)
        name, description, aggregator, local_dim = self.client().submit(
            _describe, conf, info, pure=False, retries=self.retries).result()
        return RemoteBackend(conf, name, description, aggregator, local_dim)

    def extract_split(self, backend: Backend, dataset: "Dataset", split: str, directory: Path,
                      todo: Sequence[str], *, local: bool, global_: bool, num_workers: int,
                      half_precision: bool, max_pixels: Optional[int], shard_size: int) -> int:
        """Extract ``todo`` (ids of ``split``) on the cluster into the store ``directory``.

        Returns:
            The number of images that failed (recorded in the store, as locally).

        Raises:
            RuntimeError: a chunk failed on the cluster after its retries (the message names it).
        """
        distributed = _distributed()
        conf = backend.conf
        if conf is None:
            raise RuntimeError(f"The {backend.name} backend was made by hand (it has no settings, backend.conf): it "
                               "cannot be rebuilt on the workers; give it settings or extract without run.cluster")
        info = backend_info(conf.backend)
        client = self.client()
        threads = max(1, sum(client.nthreads().values()))
        size = self.chunk_size or max(1, min(int(shard_size), math.ceil(len(todo) / (4 * threads))))
        chunks = iter([list(todo[i:i + size]) for i in range(0, len(todo), size)])
        directory.mkdir(parents=True, exist_ok=True)
        pending: Dict[Any, List[str]] = {}
        root, task = str(dataset.root), dataset.task

        def submit(chunk: List[str]):
            items = [(i, str(dataset.path(split, i))) for i in chunk]
            future = client.submit(_extract_chunk, conf, info, root, task, split, items, local, global_, num_workers,
                                   half_precision, max_pixels, key=f"lr-extract-{split}-{_tag(split, chunk)}",
                                   retries=self.retries)
            pending[future] = chunk
            return future

        failures = 0
        logger.info("%s: extracting %d images on the cluster in chunks of %d (%d workers)", split, len(todo), size,
                    len(client.nthreads()))
        with progress(total=len(todo), desc=f"extract {split}", unit="img") as bar:
            first = [submit(c) for c in itertools.islice(chunks, self.max_in_flight or 2 * threads)]
            running = distributed.as_completed(first, loop=client.loop)  # not the default client's
            try:
                for future in running:
                    chunk = pending.pop(future)
                    try:
                        files = future.result()
                    except Exception as exc:
                        raise RuntimeError(f"Extracting {len(chunk)} {split} images ({chunk[0]}, ...) failed on the "
                                           f"cluster: {type(exc).__name__}: {exc}") from exc
                    for k, data in enumerate(files):
                        failures += self._write(directory, f"part-c{_tag(split, chunk)}{k:02d}.h5", data)
                    future.release()
                    bar.update(len(chunk))  # a time budget may stop here: nothing new is submitted
                    following = next(chunks, None)
                    if following is not None:
                        running.add(submit(following))
            except BaseException:
                client.cancel(list(pending))
                raise
        return failures

    @staticmethod
    def _write(directory: Path, name: str, data: bytes) -> int:
        """Write a returned shard into the store (validated, atomically); its failures."""
        final = directory / name
        tmp = final.with_name(final.name + ".tmp")
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise write_error(tmp, exc) from exc
        problem = validate_shard(tmp)
        if problem is not None:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"A shard returned by the cluster is damaged ({problem}); run the same command again")
        publish(tmp, final)
        return shard_counts(final)["failed"]
