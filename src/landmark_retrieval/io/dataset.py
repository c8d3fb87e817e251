"""GLR dataset layouts: recognition (GLR2020) and retrieval (GLR2021).

Recognition (Kaggle ``landmark-recognition-2020``)::

    DATA/train.csv                      id,landmark_id
    DATA/train/{a}/{b}/{c}/{id}.jpg     id = "abc..." (Kaggle ids are 16 hex characters)
    DATA/test/{a}/{b}/{c}/{id}.jpg      test ids = the image files found under test/
    DATA/solution.csv                   optional, Kaggle solution format: id,landmarks,Usage
                                        (landmarks = space-separated ints, possibly empty)

Retrieval (Kaggle ``landmark-retrieval-2021``): the database is ``index/``::

    DATA/index/{a}/{b}/{c}/{id}.jpg     index ids = the image files found under index/
    DATA/test/{a}/{b}/{c}/{id}.jpg
    DATA/train.csv + DATA/train/        optional: labelled images (label-aware re-ranking)
    DATA/solution.csv                   optional: id,images,Usage (images = space-separated
                                        relevant index ids, possibly empty)

The task is detected from the layout (an ``index/`` folder means retrieval) unless given.

The CSV files are read with the ``csv`` module (UTF-8; quoted ids may hold commas, quotes and
newlines; extra columns are allowed) and every problem raises an error naming the file, the line
and the fix. A ``solution.csv`` that cannot be read only disables scoring
(``Dataset.solution_error``). Scanning ``test/`` (and ``train/``) does not follow directory
symlinks and skips names that are not valid UTF-8, with a warning each.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import pandas as pd

from .images import is_image_file
from .layout import TASKS  # defined with the layout: the CLI reads it without loading pandas
from .tables import RetrievalSolution, Solution, read_retrieval_solution_csv, read_solution_csv, read_train_csv

logger = logging.getLogger("landmark_retrieval")



def image_path(root: Union[str, Path], split: str, image_id: str, suffix: str = ".jpg") -> Path:
    """Kaggle path of an image: ``root/split/id[0]/id[1]/id[2]/id.jpg``."""
    if len(image_id) < 3:
        raise ValueError(f"Image id {image_id!r} is shorter than 3 characters; GLR ids are 16 hex characters")
    return Path(root) / split / image_id[0] / image_id[1] / image_id[2] / f"{image_id}{suffix}"


@dataclass
class Dataset:
    """A GLR-layout dataset on disk (recognition or retrieval, see the module docstring)."""

    root: Path
    train: pd.DataFrame  # columns: id (str), landmark_id (int64); empty for retrieval without train.csv
    test_ids: List[str]
    solution: Optional[Union[Solution, RetrievalSolution]] = None
    #: why ``solution.csv`` could not be read (then ``solution`` is None); scoring raises it
    solution_error: Optional[str] = None
    task: str = "recognition"
    index_ids: List[str] = field(default_factory=list)
    _test_paths: Dict[str, Path] = field(default_factory=dict, repr=False)
    _train_paths: Optional[Dict[str, Path]] = field(default=None, repr=False)
    _index_paths: Dict[str, Path] = field(default_factory=dict, repr=False)

    @property
    def db_split(self) -> str:
        """The split test images are matched against: ``train`` (recognition) or ``index``."""
        return "index" if self.task == "retrieval" else "train"

    @property
    def has_train(self) -> bool:
        return len(self.train) > 0

    @property
    def train_ids(self) -> List[str]:
        return self.train["id"].tolist()

    def labels(self) -> Dict[str, int]:
        """train id -> landmark id."""
        return dict(zip(self.train["id"], self.train["landmark_id"].astype(int)))

    def path(self, split: str, image_id: str) -> Path:
        if split == "test" and image_id in self._test_paths:
            return self._test_paths[image_id]
        if split == "index" and image_id in self._index_paths:
            return self._index_paths[image_id]
        if split == "train" and self._train_paths and image_id in self._train_paths:
            return self._train_paths[image_id]
        return image_path(self.root, split, image_id)

    def train_on_disk(self) -> Dict[str, Path]:
        """Train id -> path of the train images that exist under ``train/`` (scanned once).

        Kaggle's re-run environment ships only the train images of the private test set's
        landmarks, so ``train.csv`` may list many more ids than there are files.
        """
        if self._train_paths is None:
            self._train_paths = find_images(self.root / "train")
        return self._train_paths

    def ids(self, split: str) -> List[str]:
        if split == "train":
            return self.train_ids
        if split == "test":
            return list(self.test_ids)
        if split == "index":
            return list(self.index_ids)
        raise ValueError(f"Unknown split {split!r}; expected 'train', 'index' or 'test'")


def _is_utf8(name: str) -> bool:
    """False for a name ``os`` decoded with surrogate escapes (bytes that are not UTF-8)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def find_images(directory: Union[str, Path], key: Optional[Callable[[Path], str]] = None) -> Dict[str, Path]:
    """Map id -> path for every image file under ``directory`` (id = file stem, or ``key(path)``),
    sorted by path.

    ``directory`` itself may be a symlink, and so may the image files, but directory symlinks
    below it are not followed (one warning each): a link back to the dataset root would make
    train images test ids, and a link loop would never end. Names that are not valid UTF-8 are
    skipped with a warning (as are unreadable folders), so they cannot break the run later.

    Returns:
        ``{id: path}``; empty when ``directory`` does not exist.
    """
    found: Dict[str, Path] = {}

    def unreadable(exc: OSError) -> None:
        logger.warning("Cannot list %s (%s): its images are left out", exc.filename, exc.strerror or exc)

    for dirpath, dirnames, filenames in os.walk(directory, onerror=unreadable):
        keep = []
        for name in sorted(dirnames):
            sub = os.path.join(dirpath, name)
            if not _is_utf8(name):
                logger.warning("Skipping folder %r in %s: its name is not valid UTF-8 (rename it)",
                               os.fsencode(name), os.fsencode(dirpath))
            elif os.path.islink(sub):
                logger.warning("Skipping directory symlink %s -> %s: symlinked folders are not followed "
                               "(replace the link by the folder or its files)", sub, os.readlink(sub))
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            stem = os.path.splitext(name)[0]
            if not is_image_file(name):
                continue
            if not _is_utf8(name):
                logger.warning("Skipping image %r in %s: its file name is not valid UTF-8 (rename it)",
                               os.fsencode(name), os.fsencode(dirpath))
                continue
            p = Path(dirpath) / name
            image_id = stem if key is None else key(p)
            if image_id in found:
                logger.warning("Image id %s appears twice (%s, %s); keeping the first", image_id, found[image_id], p)
                continue
            found[image_id] = p
    return found


def detect_task(root: Union[str, Path]) -> str:
    """``retrieval`` when ``root`` has an ``index/`` folder, else ``recognition``."""
    return "retrieval" if (Path(root) / "index").is_dir() else "recognition"


def load_dataset(root: Union[str, Path], task: Optional[str] = None) -> Dataset:
    """Load a GLR-layout dataset (see the module docstring).

    Args:
        root: the dataset folder.
        task: ``recognition`` or ``retrieval``; None detects it from the layout.

    A ``test/`` folder without images is valid (one warning): the submission then has only its
    header line.

    A ``solution.csv`` that cannot be read does not raise: the dataset gets ``solution=None``
    and the message in ``solution_error`` (logged once as an error), so that the submission is
    still written; :func:`~landmark_retrieval.evaluate.evaluate_run` raises it.

    Raises:
        FileNotFoundError: no dataset folder, ``train.csv`` or ``test/`` folder.
        ValueError: a malformed ``train.csv`` (see :func:`read_train_csv`).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset directory {root} does not exist")
    task = task or detect_task(root)
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}")
    index_paths: Dict[str, Path] = {}
    if task == "retrieval":
        if not (root / "index").is_dir():
            raise FileNotFoundError(f"No index/ folder in {root}: a retrieval dataset has index images in "
                                    f"{root / 'index'}/a/b/c/<id>.jpg (or use --task recognition)")
        index_paths = find_images(root / "index")
        has_csv = (root / "train.csv").exists()
        train = read_train_csv(root / "train.csv") if has_csv else pd.DataFrame(
            {"id": pd.Series([], dtype=object), "landmark_id": pd.Series([], dtype="int64")})
    else:
        train = read_train_csv(root / "train.csv")
    test_dir = root / "test"
    if not test_dir.is_dir():
        raise FileNotFoundError(f"No test/ folder in {root}: test images go in {test_dir}/a/b/c/<id>.jpg")
    test_paths = find_images(test_dir)
    if not test_paths:
        logger.warning("%s has no images: the submission has only its header (every image file under it "
                       "is a test image)", test_dir)
    solution_path = root / "solution.csv"
    solution: Optional[Solution] = None
    solution_error: Optional[str] = None
    if solution_path.exists() or solution_path.is_symlink():  # a dangling link is an error too
        try:
            solution = (read_retrieval_solution_csv if task == "retrieval" else read_solution_csv)(solution_path)
        except (ValueError, OSError) as exc:  # never stops the run: only scoring needs it
            solution_error = str(exc)
            logger.error("Cannot read %s, the run will not be scored: %s", solution_path, solution_error)
    labelled = f"{len(train)} train images ({train['landmark_id'].nunique()} landmarks), "
    logger.info("Dataset %s (%s): %s%s%d test images%s", root, task,
                f"{len(index_paths)} index images, " if task == "retrieval" else "",
                labelled if task != "retrieval" or len(train) else "", len(test_paths),
                ", with solution.csv" if solution else "")
    return Dataset(root=root, train=train, test_ids=list(test_paths), solution=solution,
                   solution_error=solution_error, task=task, index_ids=list(index_paths),
                   _test_paths=test_paths, _index_paths=index_paths)


def nonlandmark_images(folder: Union[str, Path]) -> Dict[str, Path]:
    """Every image file below ``folder`` (directory symlinks not followed), by id.

    Returns:
        ``{id: path}`` sorted by relative path; the id is the first 16 hex digits of the MD5 of
        the relative path (file names may repeat across sub-folders).

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"predict.nonlandmark_dir: {folder} is not a folder of non-landmark images")
    found: List[Tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            if is_image_file(name):
                path = Path(dirpath) / name
                found.append((path.relative_to(folder).as_posix(), path))
    found.sort()
    return {hashlib.md5(rel.encode()).hexdigest()[:16]: path for rel, path in found}
