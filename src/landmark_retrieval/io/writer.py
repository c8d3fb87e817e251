"""Writing feature stores: HDF5 shards that become final only when complete.

:class:`ShardWriter` collects images' features and failures and publishes a shard of
``extract.shard_size`` images atomically (write, flush, fsync, rename); :class:`BackgroundWriter`
does the writing in a thread while extraction goes on. Readers are in
:mod:`landmark_retrieval.io.store`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Tuple, Union

import h5py
import numpy as np

from ..features import Features
from .atomic import publish, write_error

logger = logging.getLogger("landmark_retrieval")

_STR = h5py.string_dtype("utf-8")



def stored_descriptors(descriptors: np.ndarray, half_precision: bool = False) -> np.ndarray:
    """Local descriptors as written to a shard: binary (uint8, packed bits) unchanged, float ones
    as float32 (float16 with ``half_precision``)."""
    d = np.asarray(descriptors)
    if d.dtype == np.uint8:
        return d
    return d.astype(np.float16 if half_precision else np.float32, copy=False)


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
