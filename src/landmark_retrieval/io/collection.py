"""A folder of one's own photos as a dataset: ids from relative paths, queries from files.

An indexed folder's images are the ``index`` split of a retrieval dataset whose root is the
folder. An image's **id is its path relative to the folder** (``trips/rome/IMG 001.jpg``),
percent-encoded (:func:`photo_id`: every character but letters, digits and ``-_.~`` becomes
``%XX``, so ``/`` is ``%2F`` and a space ``%20``): ids are unique even when file names repeat in
subfolders, hold no ``/`` (the feature store's keys), no space or comma (the CSVs' image lists),
and :func:`photo_path` gives the relative path back exactly.

A query image gets the id ``q-<sha1 of its bytes, 16 hex>-<encoded file name>``: a search killed
and run again reuses the features of its queries; an edited file is a new query.

``WORK/collection.json`` records the folder a work directory indexes and the ids its last
``index`` found there (what "removed" is counted against).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union
from urllib.parse import quote, unquote

import pandas as pd

from .atomic import write_text_atomic
from .dataset import Dataset, find_images

PathLike = Union[str, Path]


def photo_id(relative: str) -> str:
    """The id of the image at ``relative`` (a POSIX path relative to the indexed folder)."""
    return quote(relative, safe="")


def photo_path(image_id: str) -> str:
    """The relative path an id of :func:`photo_id` stands for (ids of queries: their file name)."""
    if image_id.startswith("q-") and image_id.count("-") >= 2:
        return unquote(image_id.split("-", 2)[2])
    return unquote(image_id)


def scan_folder(folder: PathLike) -> Dict[str, Path]:
    """``{id: path}`` of every image under ``folder`` (recursively, sorted by relative path;
    the listing rules of :func:`landmark_retrieval.io.dataset.find_images`: no folder symlinks
    followed, names that are not UTF-8 skipped with a warning)."""
    folder = Path(folder)
    found = find_images(folder, key=lambda p: photo_id(p.relative_to(folder).as_posix()))
    return dict(sorted(found.items(), key=lambda item: item[1].relative_to(folder).as_posix()))


def query_id(path: PathLike) -> str:
    """The id of a query image: its content hash and its encoded file name."""
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"q-{digest.hexdigest()[:16]}-{photo_id(Path(path).name)}"


def query_images(paths: Iterable[PathLike]) -> Dict[str, Path]:
    """``{query id: path}`` of image files and of every image under folders, in the order given.

    Raises:
        FileNotFoundError: a path that does not exist (named).
        ValueError: a folder without images, or a file that is not an image (named).
    """
    out: Dict[str, Path] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = scan_folder(path)
            if not found:
                raise ValueError(f"{path} holds no image files (.jpg, .png, .webp, ...)")
            files: Sequence[Path] = list(found.values())
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"No such query image or folder: {path}")
        for f in files:
            out.setdefault(query_id(f), f)
    return out


def collection_dataset(folder: PathLike, queries: Optional[Dict[str, Path]] = None,
                       index: Optional[Dict[str, Path]] = None) -> Dataset:
    """The retrieval dataset of an indexed ``folder`` (its ``index`` split; ``index`` when already
    scanned) with ``queries`` (``{query id: path}``) as its test images."""
    index = scan_folder(folder) if index is None else index
    queries = queries or {}
    return Dataset(root=Path(folder), train=pd.DataFrame({"id": pd.Series([], dtype=str),
                                                          "landmark_id": pd.Series([], dtype="int64")}),
                   test_ids=list(queries), task="retrieval", index_ids=list(index), _test_paths=dict(queries),
                   _index_paths=dict(index))


def collection_path(work: PathLike) -> Path:
    return Path(work) / "collection.json"


def read_collection(work: PathLike) -> Optional[Path]:
    """The folder ``work`` indexes, or None (not an index work directory).

    Raises:
        ValueError: ``collection.json`` is unreadable (named, with the fix).
    """
    path = collection_path(work)
    if not path.is_file():
        return None
    try:
        return Path(json.loads(path.read_text(encoding="utf-8"))["folder"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is damaged ({exc}): index the folder again with "
                         "`landmark-retrieval index FOLDER --work WORK`") from None


def read_listing(work: PathLike) -> List[str]:
    """The image ids the last ``index`` call found in the folder ([] when none was recorded)."""
    try:
        return list(json.loads(collection_path(work).read_text(encoding="utf-8")).get("images", []))
    except (OSError, ValueError, AttributeError):
        return []


def write_collection(work: PathLike, folder: PathLike, ids: Iterable[str] = ()) -> None:
    """Record the folder ``work`` indexes and the image ids found in it."""
    doc = {"folder": os.path.abspath(folder), "images": list(ids)}
    write_text_atomic(collection_path(work), json.dumps(doc, indent=1) + "\n")
