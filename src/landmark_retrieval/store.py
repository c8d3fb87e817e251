"""On-disk feature store: HDF5 shards keyed by image id.

A store is a directory of shard files ``part-00000.h5``, ``part-00001.h5``, ... plus
``meta.json`` (the backend settings the features were made with). A shard is written to
``*.h5.tmp`` and renamed when complete, so an interrupted run leaves only complete shards
behind and loses at most one shard of work. Layout of one shard::

    local/<image_id>/keypoints    (N, 2) float32, (x, y) original-image pixels
    local/<image_id>/descriptors  (N, D) float32 (or float16 when stored at half precision),
                                  or uint8 packed bits of binary descriptors (ORB: D = 32), as is
    local/<image_id>/scores       (N,)   float32
    local/<image_id>/scales       (N,)   float32
        attrs: image_size = (width, height)
    global/ids                    (M,)   utf-8 strings
    global/descriptors            (M, G) float32
    failed/ids, failed/errors     (F,)   utf-8 strings: images that could not be processed
    notes/ids, notes/messages     (W,)   utf-8 strings: images used despite a problem
                                         (e.g. a truncated file, decoded with errors)

A shard may hold only ``global/`` (e.g. VLAD descriptors computed after the codebook).
Its root attributes ``complete``, ``num_local``, ``num_global``, ``num_failed`` are written last:
a shard becomes final only when complete (write, flush, fsync, rename), and a shard that fails
validation on opening (unreadable, no ``complete`` mark, counts that disagree) is never
trusted: :class:`FeatureStore` skips it with a warning and, with ``repair=True`` (the extract
step), moves it to ``damaged/`` so that its images are extracted again.

A write error (e.g. a full disk) discards the shard being written, never a finished one, and
raises :class:`StoreWriteError` naming the path: free space and run the same command again.
Only this module knows the layout.
"""
from __future__ import annotations

import csv
import errno
import io
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

from .features import Features

logger = logging.getLogger("landmark_retrieval")

_STR = h5py.string_dtype("utf-8")


class StoreWriteError(OSError):
    """Writing features failed (e.g. no space left); finished shards are intact."""


def write_error(path: Union[str, Path], exc: OSError) -> StoreWriteError:
    """A :class:`StoreWriteError` that names ``path`` and says how to recover."""
    reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return StoreWriteError(
        exc.errno, f"Could not write {path}: {reason}. Finished work is kept: free space and run "
                   "the same command again to resume")


def fsync_file(path: Union[str, Path]) -> None:
    """Flush a closed file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Union[str, Path]) -> None:
    """Make a rename in ``directory`` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it to ``final`` and fsync the directory: the file appears complete."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def stored_descriptors(descriptors: np.ndarray, half_precision: bool = False) -> np.ndarray:
    """Local descriptors as written to a shard: binary (uint8, packed bits) unchanged, float ones
    as float32 (float16 with ``half_precision``)."""
    d = np.asarray(descriptors)
    if d.dtype == np.uint8:
        return d
    return d.astype(np.float16 if half_precision else np.float32, copy=False)


def read_descriptors(dataset: "h5py.Dataset") -> np.ndarray:
    """A stored descriptor array read back: uint8 (binary) as is, anything else as float32."""
    d = dataset[()]
    return d if d.dtype == np.uint8 else d.astype(np.float32, copy=False)


def _check_id(image_id: str) -> str:
    if not isinstance(image_id, str) or not image_id or "/" in image_id or image_id in (".", ".."):
        raise ValueError(f"Invalid image id {image_id!r}: ids are file stems and cannot contain '/'")
    return image_id


class ShardWriter:
    """Writes features into successive shards of ``directory`` (use as a context manager).

    Args:
        directory: the store directory (created if missing).
        shard_size: images per shard.
        prefix: shard file prefix (``part`` for extraction, e.g. ``vlad`` for later globals).
        half_precision: store float local descriptors as float16 (binary uint8 ones stay uint8).

    Leaving the context normally or by an interruption completes the current shard (nothing
    finished is lost); a write error discards it and raises :class:`StoreWriteError`.
    """

    def __init__(self, directory: Union[str, Path], shard_size: int = 500, prefix: str = "part",
                 half_precision: bool = False):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.directory, exc) from exc
        self.shard_size = max(1, int(shard_size))
        self.prefix = prefix
        self.half = half_precision
        self._file: Optional[h5py.File] = None
        self._tmp: Optional[Path] = None
        self._count = 0
        self._num_local = 0
        self._global_ids: List[str] = []
        self._global_desc: List[np.ndarray] = []
        self._failed: List[Tuple[str, str]] = []
        self._notes: List[Tuple[str, str]] = []
        for stale in self.directory.glob(f"{prefix}-*.h5.tmp"):
            logger.info("Removing incomplete shard %s left by an interrupted run", stale.name)
            stale.unlink()

    def _next_path(self) -> Path:
        taken = {p.name.split(".")[0] for p in self.directory.glob(f"{self.prefix}-*.h5")}
        taken |= {p.name.split(".")[0] for p in (self.directory / "damaged").glob(f"{self.prefix}-*.h5*")}
        i = 0
        while f"{self.prefix}-{i:05d}" in taken:
            i += 1
        return self.directory / f"{self.prefix}-{i:05d}.h5"

    def _open(self) -> h5py.File:
        if self._file is None:
            final = self._next_path()
            self._tmp = final.with_name(final.name + ".tmp")
            try:
                self._file = h5py.File(self._tmp, "w")
            except OSError as exc:
                self._discard()
                raise write_error(self._tmp, exc) from exc
        return self._file

    def add(self, image_id: str, feats: Features, write_local: bool = True) -> None:
        """Add one image's features (local unless ``write_local`` is False; global if present).

        All or nothing: an error or an interruption in the middle leaves no trace of the image.
        """
        _check_id(image_id)
        f = self._open()
        name = f"local/{image_id}"
        try:
            if write_local:
                grp = f.create_group(name)
                desc = stored_descriptors(feats.descriptors, self.half)
                grp.create_dataset("keypoints", data=feats.keypoints.astype(np.float32, copy=False))
                grp.create_dataset("descriptors", data=desc)
                grp.create_dataset("scores", data=feats.scores.astype(np.float32, copy=False))
                grp.create_dataset("scales", data=feats.scales.astype(np.float32, copy=False))
                grp.attrs["image_size"] = np.asarray(feats.image_size, np.int64)
        except BaseException as exc:
            self._rollback(name)
            if isinstance(exc, OSError):
                path = self._tmp
                self._discard()
                raise write_error(path or self.directory, exc) from exc
            raise
        self._num_local += bool(write_local)
        if feats.global_descriptor is not None:
            self._global_ids.append(image_id)
            self._global_desc.append(np.asarray(feats.global_descriptor, np.float32))
        self._bump()

    def _rollback(self, name: str) -> None:
        """Remove a partly written group; if even that fails, the shard is discarded."""
        try:
            if self._file is not None and name in self._file:
                del self._file[name]
        except BaseException:
            self._discard()

    def add_global(self, image_id: str, descriptor: np.ndarray) -> None:
        """Add a global descriptor only."""
        self._open()
        self._global_ids.append(_check_id(image_id))
        self._global_desc.append(np.asarray(descriptor, np.float32))
        self._bump()

    def add_failure(self, image_id: str, error: str) -> None:
        """Record an image that could not be processed (it will not be retried on resume)."""
        self._open()
        self._failed.append((image_id, error))
        self._bump()

    def add_note(self, image_id: str, message: str) -> None:
        """Record a problem with an image whose features are stored anyway (e.g. truncated)."""
        self._open()
        self._notes.append((_check_id(image_id), message))

    def _bump(self) -> None:
        self._count += 1
        if self._count >= self.shard_size:
            self.flush()

    def _reset(self) -> None:
        self._file, self._tmp, self._count, self._num_local = None, None, 0, 0
        self._global_ids, self._global_desc, self._failed, self._notes = [], [], [], []

    def _discard(self) -> None:
        """Drop the shard being written (its images will be extracted again)."""
        tmp = self._tmp
        if self._file is not None:
            try:
                self._file.close()
            except BaseException:
                pass
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass
        self._reset()

    def flush(self) -> None:
        """Complete the current shard (if any) and make it visible to readers."""
        if self._file is None:
            return
        f, tmp = self._file, self._tmp
        assert tmp is not None
        try:
            if self._global_ids:
                g = f.require_group("global")
                g.create_dataset("ids", data=np.array(self._global_ids, dtype=object), dtype=_STR)
                g.create_dataset("descriptors", data=np.stack(self._global_desc).astype(np.float32))
            if self._failed:
                g = f.require_group("failed")
                g.create_dataset("ids", data=np.array([i for i, _ in self._failed], dtype=object), dtype=_STR)
                g.create_dataset("errors", data=np.array([e for _, e in self._failed], dtype=object), dtype=_STR)
            if self._notes:
                g = f.require_group("notes")
                g.create_dataset("ids", data=np.array([i for i, _ in self._notes], dtype=object), dtype=_STR)
                g.create_dataset("messages", data=np.array([m for _, m in self._notes], dtype=object), dtype=_STR)
            f.attrs["num_notes"] = len(self._notes)
            f.attrs["num_local"] = self._num_local
            f.attrs["num_global"] = len(self._global_ids)
            f.attrs["num_failed"] = len(self._failed)
            f.attrs["complete"] = 1  # written last
            f.close()
            publish(tmp, tmp.with_suffix(""))  # drop ".tmp"
        except OSError as exc:
            self._discard()
            raise write_error(tmp, exc) from exc
        except BaseException:
            self._discard()
            raise
        self._reset()

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Complete the shard even on an interruption: everything added so far is kept.
        # After a write error the shard was already discarded (nothing to flush).
        if exc_type is not None and issubclass(exc_type, OSError):
            self._discard()
            return
        self.close()


class BackgroundWriter:
    """A :class:`ShardWriter` driven by one background thread (use as a context manager).

    ``add`` / ``add_failure`` / ``add_note`` queue the call (at most ``max_pending`` at a time:
    bounded memory) and return at once, so HDF5 writes, shard completion and fsync overlap with
    feature extraction instead of delaying it. Calls are applied in order, as by the writer
    itself. After a write error nothing more is written; the error (:class:`StoreWriteError`)
    is raised by the next call or on leaving the context. Leaving the context (normally or by an
    interruption) waits for the queued calls, then completes the shard like ``ShardWriter``.
    """

    def __init__(self, writer: ShardWriter, max_pending: int = 16):
        import queue
        import threading

        self.writer = writer
        self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, int(max_pending)))
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._work, name="shard-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # after an error, drop what follows (as the synchronous loop stops)
            method, args = item
            try:
                getattr(self.writer, method)(*args)
            except BaseException as exc:  # re-raised in the caller's thread
                self._error = exc

    def _put(self, method: str, *args) -> None:
        self._raise()
        self._queue.put((method, args))

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def add(self, image_id: str, feats: Features, write_local: bool = True) -> None:
        """Queue :meth:`ShardWriter.add` (``feats`` must not be modified afterwards)."""
        self._put("add", image_id, feats, write_local)

    def add_failure(self, image_id: str, error: str) -> None:
        self._put("add_failure", image_id, error)

    def add_note(self, image_id: str, message: str) -> None:
        self._put("add_note", image_id, message)

    def _drain(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._drain()
        if self._error is not None:
            error, self._error = self._error, None
            self.writer.__exit__(type(error), error, None)
            if exc is None:
                raise error
            return
        self.writer.__exit__(exc_type, exc, tb)


def validate_shard(path: Path) -> Optional[str]:
    """None when the shard at ``path`` is complete and consistent, else what is wrong."""
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", 0):
                return "no completion mark (written by an interrupted run?)"
            n_local = len(f["local"]) if "local" in f else 0
            if n_local != int(f.attrs.get("num_local", -1)):
                return f"{n_local} local groups, {int(f.attrs.get('num_local', -1))} expected"
            n_global = 0
            if "global" in f:
                n_global = len(f["global/ids"])
                if f["global/descriptors"].shape[0] != n_global:
                    return "global ids and descriptors differ in length"
            if n_global != int(f.attrs.get("num_global", -1)):
                return f"{n_global} global descriptors, {int(f.attrs.get('num_global', -1))} expected"
            n_failed = len(f["failed/ids"]) if "failed" in f else 0
            if n_failed != int(f.attrs.get("num_failed", -1)):
                return f"{n_failed} failures, {int(f.attrs.get('num_failed', -1))} expected"
            n_notes = len(f["notes/ids"]) if "notes" in f else 0
            if n_notes != int(f.attrs.get("num_notes", -1)):
                return f"{n_notes} notes, {int(f.attrs.get('num_notes', -1))} expected"
    except Exception as exc:  # unreadable: truncated, not HDF5, ...
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


def shard_image_ids(path: Union[str, Path]) -> List[str]:
    """Sorted ids of every image a shard records: local features, global descriptors, failures."""
    with h5py.File(path, "r") as f:
        ids = set(f["local"].keys()) if "local" in f else set()
        if "global" in f:
            ids.update(f["global/ids"].asstr()[()])
        if "failed" in f:
            ids.update(f["failed/ids"].asstr()[()])
    return sorted(ids)


def shard_counts(path: Union[str, Path]) -> Dict[str, int]:
    """``{"local": .., "global": .., "failed": ..}`` of a complete shard (its root attributes)."""
    with h5py.File(path, "r") as f:
        return {k: int(f.attrs.get(f"num_{k}", 0)) for k in ("local", "global", "failed")}


def set_aside(path: Path, reason: str) -> Path:
    """Move a damaged shard to ``<store>/damaged/`` (never deleted: it may be inspected)."""
    damaged = path.parent / "damaged"
    damaged.mkdir(exist_ok=True)
    target = damaged / path.name
    i = 1
    while target.exists():
        target = damaged / f"{path.name}.{i}"
        i += 1
    shutil.move(str(path), str(target))
    logger.warning("Damaged feature shard %s (%s) moved to %s; its images will be extracted again",
                   path, reason, target)
    return target


def strongest(scores: np.ndarray, n: int) -> np.ndarray:
    """Rows of the ``n`` highest ``scores`` (ties: the earlier row), in ascending row order.

    Args:
        scores: (N,) detector scores; n: how many to keep (>= 0).

    Returns:
        (min(n, N),) int64 row indices, ascending.
    """
    scores = np.asarray(scores).reshape(-1)
    n = max(0, min(int(n), len(scores)))
    return np.sort(np.argsort(-scores.astype(np.float64), kind="stable")[:n])


class FeatureStore:
    """Read access to a store directory written by :class:`ShardWriter`.

    Opening scans the shards' indices only; features are read on demand.
    """

    def __init__(self, directory: Union[str, Path], repair: bool = False):
        self.directory = Path(directory)
        self._local: Dict[str, Path] = {}
        self._global: Dict[str, Tuple[Path, int]] = {}
        self.failures: Dict[str, str] = {}
        self.notes: Dict[str, str] = {}
        self._files: Dict[Path, h5py.File] = {}
        if not self.directory.is_dir():
            return
        for path in sorted(p for p in self.directory.glob("*-*.h5")):
            problem = validate_shard(path)
            if problem is not None:
                if repair:
                    set_aside(path, problem)
                else:
                    logger.warning("Ignoring damaged feature shard %s: %s (the extract step moves it "
                                   "aside and extracts its images again)", path, problem)
                continue
            with h5py.File(path, "r") as f:
                if "local" in f:
                    for image_id in f["local"].keys():
                        self._local[image_id] = path
                if "global" in f:
                    for row, image_id in enumerate(f["global/ids"].asstr()[()]):
                        self._global[image_id] = (path, row)
                if "failed" in f:
                    ids = f["failed/ids"].asstr()[()]
                    errors = f["failed/errors"].asstr()[()]
                    self.failures.update(zip(ids, errors))
                if "notes" in f:
                    self.notes.update(zip(f["notes/ids"].asstr()[()], f["notes/messages"].asstr()[()]))

    # -- index -----------------------------------------------------------------------------
    @property
    def local_ids(self) -> List[str]:
        return list(self._local)

    @property
    def global_ids(self) -> List[str]:
        return list(self._global)

    def done_ids(self, local: bool = True, global_: bool = True) -> set:
        """Ids that need no more work: a recorded failure, or everything asked for stored
        (local features if ``local``, a global descriptor if ``global_``)."""
        if local and global_:
            ok = set(self._local) & set(self._global)
        elif local:
            ok = set(self._local)
        elif global_:
            ok = set(self._global)
        else:
            ok = set(self._local) | set(self._global)
        return ok | set(self.failures)

    def has_local(self, image_id: str) -> bool:
        return image_id in self._local

    # -- reading ---------------------------------------------------------------------------
    def _open(self, path: Path) -> h5py.File:
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = h5py.File(path, "r")
        return f

    def local(self, image_id: str) -> Features:
        """Local features of one image (descriptors as float32; binary ones as packed uint8)."""
        path = self._local.get(image_id)
        if path is None:
            raise KeyError(
                f"No local features for image {image_id!r} in {self.directory}. "
                "Run the extract step for this dataset first (or check the --work directory)."
            )
        grp = self._open(path)[f"local/{image_id}"]
        return Features(
            keypoints=grp["keypoints"][()].astype(np.float32, copy=False),
            descriptors=read_descriptors(grp["descriptors"]),
            scores=grp["scores"][()].astype(np.float32, copy=False),
            scales=grp["scales"][()].astype(np.float32, copy=False),
            image_size=tuple(int(v) for v in grp.attrs["image_size"]),
        )

    def local_points(self, image_id: str, max_keypoints: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``(keypoints, descriptors)`` of one image as :meth:`local` reads them: what matching
        needs, in about half the time (scales and the image size are not read; scores only with
        ``max_keypoints``).

        Args:
            max_keypoints: keep only this many, the highest detector scores (ties: the earlier
                row), in their stored order; None = all.
        """
        path = self._local.get(image_id)
        if path is None:
            raise KeyError(f"No local features for image {image_id!r} in {self.directory}. "
                           "Run the extract step for this dataset first (or check the --work directory).")
        grp = self._open(path)[f"local/{image_id}"]
        keypoints = grp["keypoints"][()].astype(np.float32, copy=False)
        descriptors = read_descriptors(grp["descriptors"])
        if max_keypoints is not None and len(keypoints) > max_keypoints:
            keep = strongest(grp["scores"][()], max_keypoints)
            keypoints, descriptors = keypoints[keep], descriptors[keep]
        return keypoints, descriptors

    def iter_local_descriptors(self, ids: Optional[Sequence[str]] = None):
        """Yield ``(image_id, descriptors (N, D) float32)`` (binary descriptors: (N, D) uint8)."""
        for image_id in (self._local if ids is None else ids):
            path = self._local[image_id]
            yield image_id, read_descriptors(self._open(path)[f"local/{image_id}/descriptors"])

    def globals(self, ids: Optional[Sequence[str]] = None,
                dtype: type = np.float32) -> Tuple[List[str], np.ndarray]:
        """Global descriptors as one (M, G) matrix, rows in ``ids`` order.

        Args:
            ids: the ids to read (default: all, in store order). Ids without a global
                descriptor are skipped; the returned id list says which rows are which.
            dtype: float32, or float16 to halve the memory of a large matrix.
        """
        wanted = list(self._global) if ids is None else [i for i in ids if i in self._global]
        if not wanted:
            return [], np.zeros((0, 0), np.float32)
        by_file: Dict[Path, List[Tuple[int, int]]] = {}
        for out_row, image_id in enumerate(wanted):
            path, row = self._global[image_id]
            by_file.setdefault(path, []).append((out_row, row))
        dim = None
        out = None
        for path, rows in by_file.items():
            data = self._open(path)["global/descriptors"][()]
            if out is None:
                dim = data.shape[1]
                out = np.empty((len(wanted), dim), dtype)
            out_rows = np.array([r[0] for r in rows])
            src_rows = np.array([r[1] for r in rows])
            out[out_rows] = data[src_rows]
        assert out is not None
        return wanted, out

    def sizes(self) -> Dict[str, float]:
        """What the store holds per image, as stored (reads shapes and dtypes, not the data).

        Returns:
            ``{"local_bytes": mean bytes of the local descriptors over the images that have
            local features (0 without any), "keypoints": their mean number of local features,
            "global_bytes": bytes of one global descriptor (0 without any), "num_local",
            "num_global": how many images have each}``.
        """
        local_bytes = keypoints = 0
        for image_id, path in self._local.items():
            d = self._open(path)[f"local/{image_id}/descriptors"]
            local_bytes += int(d.size) * d.dtype.itemsize
            keypoints += int(d.shape[0])
        global_bytes = 0
        if self._global:
            path, _ = next(iter(self._global.values()))
            g = self._open(path)["global/descriptors"]
            global_bytes = int(g.shape[1]) * g.dtype.itemsize
        n_local = len(self._local)
        return {"local_bytes": local_bytes / n_local if n_local else 0.0,
                "keypoints": keypoints / n_local if n_local else 0.0,
                "global_bytes": float(global_bytes), "num_local": n_local, "num_global": len(self._global)}

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def read_meta(directory: Union[str, Path]) -> Optional[dict]:
    """The settings a store was made with (its stamp, ``meta.json``), or None for a new store."""
    from .layout import read_stamp

    return read_stamp(directory)


def write_meta(directory: Union[str, Path], meta: dict) -> None:
    """Record the settings a store is made with (see :func:`landmark_retrieval.layout.write_stamp`)."""
    from .layout import write_stamp

    Path(directory).mkdir(parents=True, exist_ok=True)
    write_stamp(directory, meta)


def write_text_atomic(path: Union[str, Path], text: str) -> Path:
    """Write a small text file completely or not at all (tmp, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        publish(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc
    return path


def write_csv_atomic(path: Union[str, Path], header: Sequence[str], rows: Iterable[Sequence[object]],
                     lineterminator: str = "\n") -> Path:
    """Write a CSV file with the ``csv`` module (any field round-trips), completely or not at all."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=lineterminator)
    w.writerow(header)
    w.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def write_array(path: Union[str, Path], name: str, array: np.ndarray, attrs: Optional[dict] = None) -> None:
    """Write one named array (e.g. the VLAD codebook) to an HDF5 file, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset(name, data=array)
            for k, v in (attrs or {}).items():
                ds.attrs[k] = v
        publish(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc


def read_array(path: Union[str, Path], name: str) -> Optional[np.ndarray]:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            return f[name][()] if name in f else None
    except OSError as exc:
        target = set_aside(path, f"unreadable ({exc})")
        logger.warning("%s was unreadable and was moved to %s; it will be computed again", path, target)
        return None
