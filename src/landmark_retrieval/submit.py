"""Step 5: write the Kaggle submission file.

``submission.csv``: header ``id,landmarks``, exactly one row per test id, ``landmarks`` =
``"<landmark_id> <score>"`` or empty (no prediction).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

from .config import Config
from .dataset import Dataset, load_dataset
from .predict import Prediction, predictions_path, read_predictions

logger = logging.getLogger("landmark_retrieval")


def write_submission(predictions: Mapping[str, Prediction], test_ids: Sequence[str],
                     path: Union[str, Path]) -> Path:
    """Write ``id,landmarks`` rows for ``test_ids`` (ids without a prediction get an empty field)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(set(test_ids)) != len(test_ids):
        raise ValueError("Duplicate test ids: a submission has exactly one row per test image")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "landmarks"])
        for test_id in test_ids:
            p = predictions.get(test_id)
            w.writerow([test_id, "" if p is None else f"{int(p[0])} {float(p[1])!r}"])
    tmp.replace(path)
    return path


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


def submit(conf: Optional[Config], data: Union[str, Path, Dataset], work: Union[str, Path],
           overwrite: bool = True, *, out: Union[str, Path] = "submission/submission.csv",
           verified: Optional[bool] = None) -> Path:
    """Step 5: write the submission from ``WORK/predictions.csv`` for every test id of the dataset.

    Args:
        conf: the run's configuration (``verify.enabled`` chooses verified or global-only
            predictions when ``verified`` is None).
        overwrite: replace an existing file at ``out`` (written atomically either way).
        out: the submission path.
        verified: use the verified predictions (True) or the global-only ones (False).
    """
    if verified is None:
        verified = conf.verify.enabled if conf is not None else True
    if not overwrite and Path(out).exists():
        raise FileExistsError(f"{out} exists: pass overwrite=True (or another --out) to replace it")
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    preds = read_predictions(predictions_path(work), verified=verified)
    path = write_submission(preds, dataset.test_ids, out)
    logger.info("Wrote %s (%d rows)", path, len(dataset.test_ids))
    return path
