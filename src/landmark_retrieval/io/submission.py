"""Submission files, written and read with the ``csv`` module: GLR2020 ``id,landmarks``
(``landmark_id score`` per test image) and GLR2021 ``id,images`` (up to 100 index ids).

The submit step writes them; evaluate and the pipeline read them back (a broken row names the
file, the line and the fix).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Collection, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .atomic import write_csv_atomic
from .layout import Prediction

logger = logging.getLogger("landmark_retrieval")

MAX_IMAGES = 100  # GLR2021: at most 100 index ids per test image



def write_submission(predictions: Mapping[str, Prediction], test_ids: Sequence[str],
                     path: Union[str, Path]) -> Path:
    """Write ``id,landmarks`` rows for ``test_ids`` (ids without a prediction get an empty field)."""
    path = Path(path)
    if len(set(test_ids)) != len(test_ids):
        raise ValueError("Duplicate test ids: a submission has exactly one row per test image")
    rows = ((i, "" if predictions.get(i) is None else f"{int(predictions[i][0])} {float(predictions[i][1])!r}")
            for i in test_ids)
    return write_csv_atomic(path, ["id", "landmarks"], rows, lineterminator="\r\n")  # csv's default, as before


def read_submission(path: Union[str, Path]) -> Dict[str, Optional[Tuple[int, float]]]:
    """Read a GLR2020 submission, checking it as Kaggle does.

    Raises:
        ValueError: naming the line, for a bad header, a repeated id, or a ``landmarks`` field
            that is not empty and not exactly ``"<int> <float>"``.
    """
    path = Path(path)
    out: Dict[str, Optional[Tuple[int, float]]] = {}
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != ["id", "landmarks"]:
            raise ValueError(f"{path}: header must be 'id,landmarks', found {header}")
        for line, row in enumerate(reader, start=2):
            if len(row) != 2:
                raise ValueError(f"{path}, line {line}: expected 2 fields (id,landmarks), found {len(row)}")
            image_id, value = row
            if image_id in out:
                raise ValueError(f"{path}, line {line}: test id {image_id!r} appears twice")
            tokens = value.split()
            if not tokens:
                out[image_id] = None
                continue
            if len(tokens) != 2:
                raise ValueError(f"{path}, line {line}: landmarks must be '<landmark_id> <score>', found {value!r}")
            try:
                out[image_id] = (int(tokens[0]), float(tokens[1]))
            except ValueError:
                raise ValueError(f"{path}, line {line}: cannot parse {value!r} as '<int> <float>'") from None
    return out


def write_retrieval_submission(rankings: Mapping[str, Sequence[str]], test_ids: Sequence[str],
                               path: Union[str, Path]) -> Path:
    """Write ``id,images`` rows for ``test_ids``: up to 100 index ids each, best first."""
    path = Path(path)
    if len(set(test_ids)) != len(test_ids):
        raise ValueError("Duplicate test ids: a submission has exactly one row per test image")
    rows = ((i, " ".join(list(rankings.get(i, []))[:MAX_IMAGES])) for i in test_ids)
    return write_csv_atomic(path, ["id", "images"], rows)


def read_retrieval_submission(path: Union[str, Path], index_ids: Optional[Collection[str]] = None,
                              ) -> Dict[str, List[str]]:
    """Read a GLR2021 submission, checking it as Kaggle does.

    Raises:
        ValueError: naming the line, for a bad header, a repeated test id, more than 100 images,
            or (with ``index_ids``) an id that is not an index image.
    """
    path = Path(path)
    out: Dict[str, List[str]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != ["id", "images"]:
            raise ValueError(f"{path}: header must be 'id,images', found {header}")
        for line, row in enumerate(reader, start=2):
            if len(row) != 2:
                raise ValueError(f"{path}, line {line}: expected 2 fields (id,images), found {len(row)}")
            image_id, value = row
            if image_id in out:
                raise ValueError(f"{path}, line {line}: test id {image_id!r} appears twice")
            images = value.split()
            if len(images) > MAX_IMAGES:
                raise ValueError(f"{path}, line {line}: {len(images)} images; at most {MAX_IMAGES} are allowed")
            if index_ids is not None:
                unknown = [i for i in images if i not in index_ids]
                if unknown:
                    raise ValueError(f"{path}, line {line}: {unknown[0]!r} is not an index image")
            out[image_id] = images
    return out

