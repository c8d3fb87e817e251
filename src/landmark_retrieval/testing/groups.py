"""Build a GLR-layout evaluation set from a folder of photographs described by ``groups.csv``.

``groups.csv`` has one row per image: ``path,group,kind,suggested_role`` with role ``index``
(a train image of landmark ``group``), ``query`` (a test image whose landmark is ``group``),
``distractor`` (a test image with no landmark) or anything else (ignored). Images are linked,
not copied, into ``DATA/{train,test}/a/b/c/<id>.jpg`` (decoders read the content, not the
suffix), with ``train.csv`` and ``solution.csv``.

With ``task="retrieval"`` (GLR2021 layout) every other ``index`` image of a landmark (the first,
third, ... in file order) goes to ``index/`` and the others to ``train/`` with ``train.csv``
labels, so that the labelled images and the database are disjoint; ``solution.csv`` lists each
query's relevant index ids (``id,images,Usage``).
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path
from typing import Dict, List, Union

from ..io.dataset import image_path


def build_glr_from_groups(photos: Union[str, Path], root: Union[str, Path], copy: bool = False,
                          task: str = "recognition") -> Path:
    """Write the GLR layout for ``photos/groups.csv`` under ``root``; returns ``root``."""
    photos, root = Path(photos), Path(root)
    with open(photos / "groups.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    labels: Dict[str, int] = {}
    train, solution = [], []
    index_of: Dict[str, List[str]] = {}
    seen: Dict[str, int] = {}
    for row in rows:
        role = row["suggested_role"]
        if role not in ("index", "query", "distractor"):
            continue
        src = photos / row["path"]
        if not src.is_file():
            raise FileNotFoundError(f"{photos / 'groups.csv'} lists {row['path']}, which does not exist")
        image_id = hashlib.md5(row["path"].encode()).hexdigest()[:16]
        split = "train" if role == "index" else "test"
        if task == "retrieval" and role == "index":
            seen[row["group"]] = seen.get(row["group"], 0) + 1
            if seen[row["group"]] % 2 == 1:
                split = "index"
                index_of.setdefault(row["group"], []).append(image_id)
        dst = image_path(root, split, image_id)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        if copy:
            shutil.copyfile(src, dst)
        else:
            os.symlink(src.resolve(), dst)
        if split == "train":
            train.append((image_id, labels.setdefault(row["group"], len(labels) + 1)))
        elif split == "test":
            group = "" if role == "distractor" else row["group"]
            label = str(labels.setdefault(group, len(labels) + 1)) if group else ""
            solution.append((image_id, label, "Public" if len(solution) % 2 == 0 else "Private", group))
    with open(root / "train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("id", "landmark_id"), *train])
    with open(root / "solution.csv", "w", newline="") as fh:
        if task == "retrieval":
            rows_out = [(i, " ".join(index_of.get(g, [])) if g else "", u) for i, _, u, g in solution]
            csv.writer(fh).writerows([("id", "images", "Usage"), *rows_out])
        else:
            csv.writer(fh).writerows([("id", "landmarks", "Usage"), *((i, lb, u) for i, lb, u, _ in solution)])
    return root
