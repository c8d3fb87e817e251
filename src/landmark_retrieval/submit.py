"""Step 5: write the Kaggle submission file.

Retrieval task (GLR2021): header ``id,images``, one row per test id, up to 100 index ids best
first (space separated).

``submission.csv``: header ``id,landmarks``, exactly one row per test id, ``landmarks`` =
``"<landmark_id> <score>"`` or empty (no prediction).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

from .config import Config
from .io.dataset import Dataset, load_dataset
from .io.layout import predictions_path, read_predictions, read_rankings
from .io.submission import write_retrieval_submission, write_submission

logger = logging.getLogger("landmark_retrieval")


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
    if dataset.task == "retrieval":
        path = write_retrieval_submission(read_rankings(predictions_path(work), verified), dataset.test_ids, out)
        logger.info("Wrote %s (%d rows, id,images)", path, len(dataset.test_ids))
        return path
    preds = read_predictions(predictions_path(work), verified=verified)
    path = write_submission(preds, dataset.test_ids, out)
    logger.info("Wrote %s (%d rows)", path, len(dataset.test_ids))
    return path
