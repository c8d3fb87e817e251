"""On-disk feature store: HDF5 shards keyed by image id.

A store is a directory of shard files ``part-00000.h5``, ``part-00001.h5``, ... plus
``meta.json`` (the backend settings the features were made with). A shard is written to
``*.h5.tmp`` and renamed when complete, so an interrupted run leaves only complete shards
behind and loses at most one shard of work. Layout of one shard::

    local/<image_id>/keypoints    (N, 2) float32, (x, y) original-image pixels
    local/<image_id>/descriptors  (N, D) float32 (or float16 when stored at half precision)
    local/<image_id>/scores       (N,)   float32
    local/<image_id>/scales       (N,)   float32
        attrs: image_size = (width, height)
    global/ids                    (M,)   utf-8 strings
    global/descriptors            (M, G) float32
    failed/ids, failed/errors     (F,)   utf-8 strings: images that could not be processed

A shard may hold only ``global/`` (e.g. VLAD descriptors computed after the codebook).
Only this module knows the layout.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

from .backends.base import Features

logger = logging.getLogger("landmark_retrieval")

_STR = h5py.string_dtype("utf-8")


def _check_id(image_id: str) -> str:
    if not image_id or "/" in image_id or image_id in (".", ".."):
        raise ValueError(f"Invalid image id {image_id!r}: ids are file stems and cannot contain '/'")
    return image_id


class ShardWriter:
    """Writes features into successive shards of ``directory`` (use as a context manager).

    Args:
        directory: the store directory (created if missing).
        shard_size: images per shard.
        prefix: shard file prefix (``part`` for extraction, e.g. ``vlad`` for later globals).
        half_precision: store local descriptors as float16.
    """

    def __init__(self, directory: Union[str, Path], shard_size: int = 500, prefix: str = "part",
                 half_precision: bool = False):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.shard_size = max(1, int(shard_size))
        self.prefix = prefix
        self.half = half_precision
        self._file: Optional[h5py.File] = None
        self._tmp: Optional[Path] = None
        self._count = 0
        self._global_ids: List[str] = []
        self._global_desc: List[np.ndarray] = []
        self._failed: List[Tuple[str, str]] = []
        for stale in self.directory.glob(f"{prefix}-*.h5.tmp"):
            logger.info("Removing incomplete shard %s left by an interrupted run", stale.name)
            stale.unlink()

    def _next_path(self) -> Path:
        taken = {p.name.split(".")[0] for p in self.directory.glob(f"{self.prefix}-*.h5")}
        i = 0
        while f"{self.prefix}-{i:05d}" in taken:
            i += 1
        return self.directory / f"{self.prefix}-{i:05d}.h5"

    def _open(self) -> h5py.File:
        if self._file is None:
            final = self._next_path()
            self._tmp = final.with_name(final.name + ".tmp")
            self._file = h5py.File(self._tmp, "w")
        return self._file

    def add(self, image_id: str, feats: Features, write_local: bool = True) -> None:
        """Add one image's features (local unless ``write_local`` is False; global if present)."""
        f = self._open()
        _check_id(image_id)
        if write_local:
            grp = f.create_group(f"local/{image_id}")
            desc = feats.descriptors.astype(np.float16 if self.half else np.float32, copy=False)
            grp.create_dataset("keypoints", data=feats.keypoints.astype(np.float32, copy=False))
            grp.create_dataset("descriptors", data=desc)
            grp.create_dataset("scores", data=feats.scores.astype(np.float32, copy=False))
            grp.create_dataset("scales", data=feats.scales.astype(np.float32, copy=False))
            grp.attrs["image_size"] = np.asarray(feats.image_size, np.int64)
        if feats.global_descriptor is not None:
            self._global_ids.append(image_id)
            self._global_desc.append(np.asarray(feats.global_descriptor, np.float32))
        self._bump()

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

    def _bump(self) -> None:
        self._count += 1
        if self._count >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Complete the current shard (if any) and make it visible to readers."""
        if self._file is None:
            return
        f = self._file
        if self._global_ids:
            g = f.require_group("global")
            g.create_dataset("ids", data=np.array(self._global_ids, dtype=object), dtype=_STR)
            g.create_dataset("descriptors", data=np.stack(self._global_desc).astype(np.float32))
        if self._failed:
            g = f.require_group("failed")
            g.create_dataset("ids", data=np.array([i for i, _ in self._failed], dtype=object), dtype=_STR)
            g.create_dataset("errors", data=np.array([e for _, e in self._failed], dtype=object), dtype=_STR)
        f.close()
        assert self._tmp is not None
        os.replace(self._tmp, self._tmp.with_suffix(""))  # drop ".tmp"
        self._file, self._tmp, self._count = None, None, 0
        self._global_ids, self._global_desc, self._failed = [], [], []

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Complete the shard even on KeyboardInterrupt: everything added so far is kept.
        self.close()


class FeatureStore:
    """Read access to a store directory written by :class:`ShardWriter`.

    Opening scans the shards' indices only; features are read on demand.
    """

    def __init__(self, directory: Union[str, Path]):
        self.directory = Path(directory)
        self._local: Dict[str, Path] = {}
        self._global: Dict[str, Tuple[Path, int]] = {}
        self.failures: Dict[str, str] = {}
        self._files: Dict[Path, h5py.File] = {}
        if not self.directory.is_dir():
            return
        for path in sorted(p for p in self.directory.glob("*-*.h5")):
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
        # an image whose local features were extracted later is not a failure
        for image_id in list(self.failures):
            if image_id in self._local:
                del self.failures[image_id]

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
        """Local features of one image (descriptors as float32)."""
        path = self._local.get(image_id)
        if path is None:
            raise KeyError(
                f"No local features for image {image_id!r} in {self.directory}. "
                "Run the extract step for this dataset first (or check the --work directory)."
            )
        grp = self._open(path)[f"local/{image_id}"]
        return Features(
            keypoints=grp["keypoints"][()].astype(np.float32, copy=False),
            descriptors=grp["descriptors"][()].astype(np.float32, copy=False),
            scores=grp["scores"][()].astype(np.float32, copy=False),
            scales=grp["scales"][()].astype(np.float32, copy=False),
            image_size=tuple(int(v) for v in grp.attrs["image_size"]),
        )

    def iter_local_descriptors(self, ids: Optional[Sequence[str]] = None):
        """Yield ``(image_id, descriptors (N, D) float32)``."""
        for image_id in (self._local if ids is None else ids):
            path = self._local[image_id]
            yield image_id, self._open(path)[f"local/{image_id}/descriptors"][()].astype(np.float32)

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
    """The settings a store was made with, or None for a new store."""
    path = Path(directory) / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_meta(directory: Union[str, Path], meta: dict) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def write_array(path: Union[str, Path], name: str, array: np.ndarray, attrs: Optional[dict] = None) -> None:
    """Write one named array (e.g. the VLAD codebook) to an HDF5 file, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        ds = f.create_dataset(name, data=array)
        for k, v in (attrs or {}).items():
            ds.attrs[k] = v
    os.replace(tmp, path)


def read_array(path: Union[str, Path], name: str) -> Optional[np.ndarray]:
    path = Path(path)
    if not path.is_file():
        return None
    with h5py.File(path, "r") as f:
        return f[name][()] if name in f else None
