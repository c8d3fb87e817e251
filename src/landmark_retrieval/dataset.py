"""GLR2020 dataset layout.

::

    DATA/train.csv                      id,landmark_id
    DATA/train/{a}/{b}/{c}/{id}.jpg     id = "abc..." (Kaggle ids are 16 hex characters)
    DATA/test/{a}/{b}/{c}/{id}.jpg      test ids = the image files found under test/
    DATA/solution.csv                   optional, Kaggle solution format: id,landmarks,Usage
                                        (landmarks = space-separated ints, possibly empty)
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import pandas as pd

logger = logging.getLogger("landmark_retrieval")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def image_path(root: Union[str, Path], split: str, image_id: str, suffix: str = ".jpg") -> Path:
    """Kaggle path of an image: ``root/split/id[0]/id[1]/id[2]/id.jpg``."""
    if len(image_id) < 3:
        raise ValueError(f"Image id {image_id!r} is shorter than 3 characters; GLR ids are 16 hex characters")
    return Path(root) / split / image_id[0] / image_id[1] / image_id[2] / f"{image_id}{suffix}"


@dataclass
class Solution:
    """Ground truth: landmark ids per test id (empty list = no landmark) and Kaggle's Usage."""

    landmarks: Dict[str, List[int]]
    usage: Dict[str, str] = field(default_factory=dict)

    def subset(self, usage: Optional[str]) -> Dict[str, List[int]]:
        """Ground truth restricted to one Usage (``Public``/``Private``); ``Ignored`` rows dropped."""
        return {
            k: v for k, v in self.landmarks.items()
            if self.usage.get(k, "Public") != "Ignored" and (usage is None or self.usage.get(k) == usage)
        }


@dataclass
class Dataset:
    """A GLR-layout dataset on disk."""

    root: Path
    train: pd.DataFrame  # columns: id (str), landmark_id (int64)
    test_ids: List[str]
    solution: Optional[Solution] = None
    _test_paths: Dict[str, Path] = field(default_factory=dict, repr=False)
    _train_paths: Optional[Dict[str, Path]] = field(default=None, repr=False)

    @property
    def train_ids(self) -> List[str]:
        return self.train["id"].tolist()

    def labels(self) -> Dict[str, int]:
        """train id -> landmark id."""
        return dict(zip(self.train["id"], self.train["landmark_id"].astype(int)))

    def path(self, split: str, image_id: str) -> Path:
        if split == "test" and image_id in self._test_paths:
            return self._test_paths[image_id]
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
        raise ValueError(f"Unknown split {split!r}; expected 'train' or 'test'")


def read_train_csv(path: Union[str, Path]) -> pd.DataFrame:
    """Read ``train.csv`` (``id,landmark_id``), checking every row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No train.csv at {path}: a GLR dataset needs DATA/train.csv with columns id,landmark_id")
    df = pd.read_csv(path, dtype={"id": str, "landmark_id": str})
    missing = {"id", "landmark_id"} - set(df.columns)
    if missing:
        raise ValueError(f"{path} lacks column(s) {sorted(missing)}; expected header 'id,landmark_id'")
    df = df[["id", "landmark_id"]]
    bad_id = df["id"].isna() | (df["id"].str.len() < 3)
    labels = pd.to_numeric(df["landmark_id"], errors="coerce")
    bad_label = labels.isna() | (labels != labels.round())
    bad = bad_id | bad_label
    if bad.any():
        row = int(bad.idxmax())
        raise ValueError(
            f"{path}, data row {row + 1} (line {row + 2}): invalid entry "
            f"id={df['id'].iloc[row]!r}, landmark_id={df['landmark_id'].iloc[row]!r}; "
            "ids must be strings of at least 3 characters and landmark_id an integer"
        )
    dup = df["id"].duplicated()
    if dup.any():
        row = int(dup.idxmax())
        raise ValueError(f"{path}, line {row + 2}: duplicate id {df['id'].iloc[row]!r}")
    return pd.DataFrame({"id": df["id"].astype(str), "landmark_id": labels.astype("int64")})


def read_solution_csv(path: Union[str, Path]) -> Solution:
    """Read a Kaggle solution file ``id,landmarks,Usage`` (landmarks may be empty)."""
    path = Path(path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "id" not in df.columns or "landmarks" not in df.columns:
        raise ValueError(f"{path} must have columns id,landmarks[,Usage]; found {list(df.columns)}")
    landmarks: Dict[str, List[int]] = {}
    usage: Dict[str, str] = {}
    for row, (image_id, value) in enumerate(zip(df["id"], df["landmarks"])):
        try:
            landmarks[image_id] = [int(v) for v in value.split()]
        except ValueError:
            raise ValueError(f"{path}, line {row + 2}: landmarks {value!r} must be space-separated integers") from None
        if "Usage" in df.columns:
            usage[image_id] = df["Usage"].iloc[row] or "Public"
    return Solution(landmarks, usage)


def find_images(directory: Path) -> Dict[str, Path]:
    """Map id -> path for every image file under ``directory`` (id = file stem), sorted by path."""
    found: Dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            stem, suffix = os.path.splitext(name)
            if suffix not in IMAGE_SUFFIXES:
                continue
            p = Path(dirpath) / name
            if stem in found:
                logger.warning("Image id %s appears twice (%s, %s); keeping the first", stem, found[stem], p)
                continue
            found[stem] = p
    return found


def load_dataset(root: Union[str, Path]) -> Dataset:
    """Load a GLR-layout dataset (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset directory {root} does not exist")
    train = read_train_csv(root / "train.csv")
    test_dir = root / "test"
    if not test_dir.is_dir():
        raise FileNotFoundError(f"No test/ folder in {root}: test images go in {test_dir}/a/b/c/<id>.jpg")
    test_paths = find_images(test_dir)
    solution_path = root / "solution.csv"
    solution = read_solution_csv(solution_path) if solution_path.is_file() else None
    logger.info(
        "Dataset %s: %d train images (%d landmarks), %d test images%s",
        root, len(train), train["landmark_id"].nunique(), len(test_paths),
        ", with solution.csv" if solution else "",
    )
    return Dataset(root=root, train=train, test_ids=list(test_paths), solution=solution, _test_paths=test_paths)
