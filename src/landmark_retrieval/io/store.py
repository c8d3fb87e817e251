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

import logging
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

from ..features import Features
from .atomic import publish, write_error
from .layout import read_stamp, write_stamp

logger = logging.getLogger("landmark_retrieval")

_STR = h5py.string_dtype("utf-8")


def read_descriptors(dataset: "h5py.Dataset") -> np.ndarray:
    """A stored descriptor array read back: uint8 (binary) as is, anything else as float32."""
    d = dataset[()]
    return d if d.dtype == np.uint8 else d.astype(np.float32, copy=False)


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
            if problem is not None and "unable to lock file" in problem:  # held by another process: not damaged
                raise RuntimeError(f"The feature shard {path} is held open by another process (is another run "
                                   f"using {self.directory.parent.parent}?): wait for it to finish and run again")
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

    def image_size(self, image_id: str) -> Tuple[int, int]:
        """``(width, height)`` of the original image whose local features are stored."""
        path = self._local.get(image_id)
        if path is None:
            raise KeyError(f"No local features for image {image_id!r} in {self.directory}")
        return tuple(int(v) for v in self._open(path)[f"local/{image_id}"].attrs["image_size"])  # type: ignore[return-value]

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
    return read_stamp(directory)


def write_meta(directory: Union[str, Path], meta: dict) -> None:
    """Record the settings a store is made with (see :func:`landmark_retrieval.io.layout.write_stamp`)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    write_stamp(directory, meta)


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
