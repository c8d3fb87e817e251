"""The whole pipeline: extract -> retrieve -> verify -> predict -> submit (-> evaluate)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Union

from .backends import Backend, make_backend
from .config import Config, save_run_config
from .dataset import Dataset, load_dataset
from .evaluate import evaluate
from .extract import extract, extract_candidates, train_local_deferred
from .layout import metrics_path
from .predict import predict
from .retrieve import retrieve
from .submit import submit
from .verify import verify

logger = logging.getLogger("landmark_retrieval")


@dataclass
class RunResult:
    """What a run produced: artifact paths, step timings (s) and, with a solution, metrics."""

    work: Path
    submission: Path
    timings: Dict[str, float] = field(default_factory=dict)
    metrics: Optional[Dict[str, float]] = None
    score_error: Optional[str] = None  # why scoring failed (the submission is written regardless)
    figure: Optional[Path] = None  # a picture of verified matches, when one was drawn


def run(conf: Config, data: Union[str, Path, Dataset], work: Union[str, Path] = "work",
        out: Union[str, Path] = "submission/submission.csv", overwrite: bool = False,
        backend: Optional[Backend] = None) -> RunResult:
    """Run every step; each one skips work already done in ``work``.

    ``conf`` is saved as ``WORK/config.json`` (the CLI's step commands continue with it); when
    it differs from the configuration saved there before, a warning names the changed settings.

    Args:
        conf: configuration (see :func:`landmark_retrieval.config.get_config`).
        data: GLR-layout dataset root.
        work: directory for features and intermediate artifacts.
        out: submission path.
        overwrite: recompute artifacts made with other settings instead of raising.
        backend: reuse an already-loaded backend.

    Returns:
        A :class:`RunResult`; ``metrics`` is set when the dataset has ``solution.csv``.
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    save_run_config(work, conf)  # the steps run later on this work directory continue with it
    logger.info("Settings: %s", conf.summary())
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    timings: Dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = time.perf_counter() - t0
        logger.info("%s done in %.1f s", name, timings[name])
        return result

    backend = backend or make_backend(conf.extract)
    timed("extract", extract, conf, dataset, work, overwrite=overwrite, backend=backend)
    timed("retrieve", retrieve, conf, dataset, work, overwrite=overwrite)
    if conf.verify.enabled:
        if train_local_deferred(conf, backend):
            timed("extract candidates", extract_candidates, conf, dataset, work, backend=backend)
        timed("verify", verify, conf, dataset, work, overwrite=overwrite)
    timed("predict", predict, conf, dataset, work)
    submission = timed("submit", submit, conf, dataset, work, out=out)
    metrics, score_error = None, getattr(dataset, "solution_error", None)
    if dataset.solution is not None and score_error is None:
        try:
            timed("evaluate", evaluate, conf, dataset, work)
            metrics = json.loads(metrics_path(work).read_text())
        except (ValueError, KeyError) as exc:  # scoring fails, never the submission
            score_error = str(exc)
    if score_error:
        logger.error("The submission %s is written, but it could not be scored: %s", submission, score_error)
    return RunResult(work=work, submission=Path(submission), timings=timings, metrics=metrics,
                     score_error=score_error)
