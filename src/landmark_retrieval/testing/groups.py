"""Build a GLR-layout evaluation set from a folder of photographs described by ``groups.csv``.

``groups.csv`` has one row per image: ``path,group,kind,suggested_role`` with role ``index``
(a train image of landmark ``group``), ``query`` (a test image whose landmark is ``group``),
``distractor`` (a test image with no landmark) or anything else (ignored). Images are linked,
not copied, into ``DATA/{train,test}/a/b/c/<id>.jpg`` (decoders read the content, not the
suffix), with ``train.csv`` and ``solution.csv``.
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path
from typing import Dict, Union

from ..dataset import image_path


def build_glr_from_groups(photos: Union[str, Path], root: Union[str, Path], copy: bool = False) -> Path:
    """Write the GLR layout for ``photos/groups.csv`` under ``root``; returns ``root``."""
    photos, root = Path(photos), Path(root)
    rows = list(csv.DictReader(open(photos / "groups.csv", newline="")))
    labels: Dict[str, int] = {}
    train, solution = [], []
    for row in rows:
        role = row["suggested_role"]
        if role not in ("index", "query", "distractor"):
            continue
        src = photos / row["path"]
        if not src.is_file():
            raise FileNotFoundError(f"{photos / 'groups.csv'} lists {row['path']}, which does not exist")
        image_id = hashlib.md5(row["path"].encode()).hexdigest()[:16]
        split = "train" if role == "index" else "test"
        dst = image_path(root, split, image_id)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        if copy:
            shutil.copyfile(src, dst)
        else:
            os.symlink(src.resolve(), dst)
        if role == "index":
            train.append((image_id, labels.setdefault(row["group"], len(labels) + 1)))
        else:
            label = "" if role == "distractor" else str(labels.setdefault(row["group"], len(labels) + 1))
            solution.append((image_id, label, "Public" if len(solution) % 2 == 0 else "Private"))
    with open(root / "train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("id", "landmark_id"), *train])
    with open(root / "solution.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("id", "landmarks", "Usage"), *solution])
    return root
