"""A local validation set carved out of ``train.csv``: tune and choose settings without ever
looking at test labels.

``landmark-retrieval split --data DATA --out VAL`` writes a GLR2020-layout dataset at ``VAL``
that the whole pipeline runs on (``run --data VAL``, scored with GAP and mAP@100):

* **held-out landmarks** (``distractor_landmarks``, a share of the landmarks): their images
  become test images *without* a landmark, i.e. distractors that a good pipeline ranks last
  (in GLR2020 most test images show no train landmark). ``distractors_per_landmark`` keeps at
  most that many of each (the others are left out): several images of one unseen landmark are
  similar to each other, which real non-landmark photos need not be;
* **held-out images** (``fraction``, a share of the other landmarks' images): test images
  with their landmark in ``solution.csv``; every landmark keeps at least one train image;
* the rest stays train (``VAL/train.csv``).

The selection (:func:`select_validation`) is pure and deterministic: it depends on the seed and
the set of (id, landmark) pairs only, not on the row order of ``train.csv``. No validation image
is in the new ``train.csv`` and no held-out landmark has a train image. Images are linked (symlinks
to the originals, or copies) into ``VAL/{train,test}/a/b/c/<id>.<ext>``, with ``VAL/split.json``
recording what was done.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

from .io.atomic import write_csv_atomic, write_text_atomic
from .io.dataset import image_path, load_dataset

logger = logging.getLogger("landmark_retrieval")



@dataclass
class ValidationSplit:
    """Which train images go where (ids in the order of the input)."""

    train: List[Tuple[str, int]]  # (id, landmark) that stay train
    test: List[Tuple[str, int]]  # held-out images of kept landmarks: test images with a landmark
    distractors: List[str]  # images of held-out landmarks: test images without a landmark
    held_out_landmarks: List[int] = field(default_factory=list)  # sorted
    left_out: List[str] = field(default_factory=list)  # images of held-out landmarks beyond distractors_per_landmark

    def summary(self) -> Dict[str, int]:
        """Counts: train images and landmarks, test images with a landmark, distractors and
        held-out landmarks."""
        return {"train_images": len(self.train), "train_landmarks": len({lm for _, lm in self.train}),
                "test_images": len(self.test), "distractor_images": len(self.distractors),
                "held_out_landmarks": len(self.held_out_landmarks)}


def _share(value: float, name: str) -> float:
    if not (isinstance(value, (int, float)) and 0 <= value < 1):
        raise ValueError(f"{name}: expected a share in [0, 1), got {value!r}")
    return float(value)


def select_validation(ids: Sequence[str], labels: Sequence[int], fraction: float = 0.1,
                      distractor_landmarks: float = 0.1, seed: int = 0,
                      distractors_per_landmark: int = 0) -> ValidationSplit:
    """Choose the held-out landmarks and images (pure; see the module docstring).

    Args:
        ids: (N,) unique train image ids; labels: (N,) their landmark ids.
        fraction: share of the kept landmarks' images that become test images (rounded; at most
            all but one image of each landmark).
        distractor_landmarks: share of the landmarks (rounded; at most all but one) whose images
            all become distractors.
        seed: the random generator's seed.
        distractors_per_landmark: at most this many distractors per held-out landmark, chosen at
            random (0 = all its images); the others are in neither train nor test.

    Returns:
        The :class:`ValidationSplit`.

    Raises:
        ValueError: different lengths, repeated ids, or a share outside [0, 1).
    """
    fraction = _share(fraction, "fraction")
    distractor_landmarks = _share(distractor_landmarks, "distractor_landmarks")
    ids = [str(i) for i in ids]
    labels = [int(lb) for lb in labels]
    if len(ids) != len(labels):
        raise ValueError(f"select_validation: {len(ids)} ids but {len(labels)} labels")
    if len(set(ids)) != len(ids):
        raise ValueError("select_validation: repeated image ids")
    if isinstance(distractors_per_landmark, bool) or not isinstance(distractors_per_landmark, int) \
            or distractors_per_landmark < 0:
        raise ValueError(f"distractors_per_landmark: expected 0 (all) or a positive integer, got "
                         f"{distractors_per_landmark!r}")
    rng = np.random.default_rng(seed)
    by_landmark: Dict[int, List[str]] = {}
    for image_id, label in sorted(zip(ids, labels), key=lambda t: (t[1], t[0])):
        by_landmark.setdefault(label, []).append(image_id)
    landmarks = sorted(by_landmark)
    n_held = min(int(round(distractor_landmarks * len(landmarks))), max(0, len(landmarks) - 1))
    held = sorted(int(v) for v in rng.choice(np.array(landmarks, np.int64), n_held, replace=False)) if n_held else []
    held_set = set(held)
    distractor_set = set()
    for lm in held:
        images = by_landmark[lm]
        keep = rng.permutation(len(images))[:distractors_per_landmark or len(images)]
        distractor_set.update(images[int(j)] for j in keep)
    kept = [lm for lm in landmarks if lm not in held_set]
    pool: List[str] = []  # images that may be held out: all but one of each kept landmark
    for lm in kept:
        images = by_landmark[lm]
        pool.extend(images[int(j)] for j in rng.permutation(len(images))[1:])
    n_images = sum(len(by_landmark[lm]) for lm in kept)
    n_test = min(int(round(fraction * n_images)), len(pool))
    test_set = {pool[int(j)] for j in rng.choice(len(pool), n_test, replace=False)} if n_test else set()
    out = ValidationSplit([], [], [], held)
    for image_id, label in zip(ids, labels):
        if label in held_set:
            (out.distractors if image_id in distractor_set else out.left_out).append(image_id)
        elif image_id in test_set:
            out.test.append((image_id, label))
        else:
            out.train.append((image_id, label))
    return out


def write_validation(split: ValidationSplit, paths: Dict[str, Path], out: Union[str, Path], copy: bool = False,
                     info: Union[Dict[str, object], None] = None) -> Path:
    """Write the GLR-layout validation dataset at ``out``.

    Args:
        split: the selection.
        paths: train id -> its image file (every id of ``split``).
        out: the new dataset folder; an earlier split there (``split.json``) is replaced, any other
            non-empty folder is refused.
        copy: copy the images instead of linking them.
        info: more to record in ``split.json`` (the selection's parameters).

    Returns:
        ``out``.

    Raises:
        FileExistsError: ``out`` is a non-empty folder that is not a validation split.
    """
    out = Path(out)
    if out.exists():
        if not (out / "split.json").is_file() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"{out} exists and is not a validation split (no split.json): refusing to replace "
                                  "it; give --out a new or empty folder")
        shutil.rmtree(out)
    out.mkdir(parents=True)

    def link(split_name: str, image_id: str) -> None:
        src = Path(paths[image_id])
        dst = image_path(out, split_name, image_id, src.suffix or ".jpg")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copyfile(src, dst)
        else:
            os.symlink(src.resolve(), dst)

    for image_id, _ in split.train:
        link("train", image_id)
    tests = sorted([(i, str(lm)) for i, lm in split.test] + [(i, "") for i in split.distractors])
    for image_id, _ in tests:
        link("test", image_id)
    write_csv_atomic(out / "train.csv", ("id", "landmark_id"), split.train)
    usage = ("Public", "Private")
    write_csv_atomic(out / "solution.csv", ("id", "landmarks", "Usage"),
                     ((i, lm, usage[n % 2]) for n, (i, lm) in enumerate(tests)))
    record = {**(info or {}), **split.summary(), "held_out_landmark_ids": split.held_out_landmarks}
    write_text_atomic(out / "split.json", json.dumps(record, indent=2) + "\n")
    return out


def make_validation_split(data: Union[str, Path], out: Union[str, Path], fraction: float = 0.1,
                          distractor_landmarks: float = 0.1, seed: int = 0, copy: bool = False,
                          distractors_per_landmark: int = 0) -> ValidationSplit:
    """Carve a validation dataset out of ``DATA/train.csv`` and write it at ``out`` (the
    ``split`` command). Train images listed without a file are left out (with a warning).

    Returns:
        The selection that was written.
    """
    dataset = load_dataset(data, "recognition")
    on_disk = dataset.train_on_disk()
    train = dataset.train[dataset.train["id"].isin(list(on_disk))]
    if len(train) < len(dataset.train):
        logger.warning("%d of %d train images listed in %s have no file: left out of the split",
                       len(dataset.train) - len(train), len(dataset.train), Path(data) / "train.csv")
    if not len(train):
        raise ValueError(f"No train image of {data} has a file under train/: nothing to split")
    split = select_validation(train["id"].tolist(), train["landmark_id"].tolist(), fraction, distractor_landmarks, seed,
                              distractors_per_landmark)
    info = {"source": str(Path(data).resolve()), "fraction": fraction, "distractor_landmarks": distractor_landmarks,
            "distractors_per_landmark": distractors_per_landmark, "seed": seed}
    write_validation(split, on_disk, out, copy=copy, info=info)
    logger.info("Validation split of %s -> %s: %s", data, out, split.summary())
    return split
