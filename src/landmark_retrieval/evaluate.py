"""Step 6: local scoring, as Kaggle scores GLR submissions.

This module reads the files (``submission.csv``, ``solution.csv``, a run's work directory) and
calls the pure metric functions of :mod:`landmark_retrieval.metrics` (GAP, top-1, mAP@100, recall@k).

A run's scores say where queries are lost: ``recall_at_{1,10,30,100}`` (was a correct image
retrieved among the first k by global descriptor?), ``recall_at_rerank`` (among the
``verify.num_to_rerank`` candidates that verification sees), ``verified_recall_at_1`` (is the first
image after re-ranking correct?) and ``verified_confirmed`` (of the queries with a correct
candidate, the share that verification ranked first). Cut-offs deeper than the retrieved
``retrieve.k`` neighbours are left out.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from .io.atomic import write_text_atomic
from .io.candidates import Candidates, load_candidates
from .io.dataset import Dataset, load_dataset
from .io.layout import metrics_path, predictions_path, read_predictions
from .io.submission import read_retrieval_submission, read_submission
from .io.tables import RetrievalSolution, Solution, read_retrieval_solution_csv, read_solution_csv
from .metrics import mean_average_precision, recall_at_k, relevant_train_images, score_predictions
from .search.rerank import predict_one, rank_index

logger = logging.getLogger("landmark_retrieval")



def _first_row(path: Union[str, Path]) -> List[str]:
    """The fields of the first line of a CSV file (BOM and surrounding spaces stripped; bytes that are
    not UTF-8 replaced: the readers report them), to tell the task from the header."""
    with open(path, "rb") as fb:
        first = fb.readline().decode("utf-8", errors="replace").lstrip("\ufeff")
    first = first.replace("\r", "\n").split("\n", 1)[0]
    try:
        return [name.strip() for name in next(csv.reader([first]), [])]
    except csv.Error:  # NUL bytes (Python < 3.11): the readers name the line
        return [first]


def score_submission(submission: Union[str, Path], solution: Union[str, Path, Solution],
                     json_out: Optional[Union[str, Path]] = None) -> Dict[str, float]:
    """Score a ``submission.csv`` against a Kaggle ``solution.csv``.

    Returns:
        Recognition (``id,landmarks``): ``{"gap", "top1", "num_test", "num_landmark_test"
        [, "gap_public", "gap_private"]}``; retrieval (``id,images``): ``{"map100", "num_test",
        "num_relevant_test"[, "map100_public", "map100_private"]}``.

    Raises:
        FileNotFoundError: no file at ``submission`` or ``solution``.
        ValueError: naming the file and the line: a submission or solution that cannot be read
            (see :func:`~landmark_retrieval.io.submission.read_submission` and
            :func:`~landmark_retrieval.io.tables.read_solution_csv`).
    """
    header = _first_row(submission)
    if header not in (["id", "landmarks"], ["id", "images"]):
        raise ValueError(f"{submission}: header must be 'id,landmarks' (recognition) or 'id,images' (retrieval), "
                         f"found {header}")
    retrieval_format = header == ["id", "images"]
    if not isinstance(solution, (Solution, RetrievalSolution)) and Path(solution).is_file():
        columns = _first_row(solution)
        needed, other = ("images", "landmarks") if retrieval_format else ("landmarks", "images")
        if needed not in columns and other in columns:
            raise ValueError(f"{submission} is a {'retrieval' if retrieval_format else 'recognition'} submission "
                             f"({','.join(header)}) but {solution} is not a solution of that task (header {columns}): "
                             "score it against the solution of its task")
    if retrieval_format or isinstance(solution, RetrievalSolution):
        sol_r = solution if isinstance(solution, RetrievalSolution) else read_retrieval_solution_csv(solution)
        metrics = score_rankings(read_retrieval_submission(submission), sol_r)
        if json_out:
            Path(json_out).write_text(json.dumps(metrics, indent=2))
        return metrics
    sol = solution if isinstance(solution, Solution) else read_solution_csv(solution)
    preds = read_submission(submission)
    missing = [k for k in sol.subset(None) if k not in preds]
    if missing:
        logger.warning("%d solution ids have no row in %s (e.g. %s)", len(missing), submission, missing[0])
    metrics = score_predictions(preds, sol)
    if json_out:
        Path(json_out).write_text(json.dumps(metrics, indent=2))
    return metrics


def evaluate_run(conf, data: Union[str, Path, Dataset], work: Union[str, Path]) -> Dict[str, float]:
    """Score a pipeline run from its work directory: GAP and mAP@100, global-only and verified.

    Raises:
        ValueError: the dataset's ``solution.csv`` could not be read (``Dataset.solution_error``;
            the run itself, and its submission, are not affected).
        FileNotFoundError: the dataset has no ``solution.csv``.
    """
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    if dataset.solution_error:
        raise ValueError(f"Cannot score the run in {work}: {dataset.solution_error}")
    if dataset.solution is None:
        raise FileNotFoundError(f"No solution.csv in {dataset.root}: nothing to evaluate against")
    if dataset.task == "retrieval":
        assert isinstance(dataset.solution, RetrievalSolution)
        candidates = load_candidates(work, None, conf.verify.num_to_rerank)
        variants = {"global": (False, False), "verified": (True, False)}
        if conf.retrieve.label_aware and dataset.has_train:
            variants["label"] = (True, True)
        out: Dict[str, float] = {}
        rankings = {}
        for name, (verified, label_aware) in variants.items():
            rankings[name] = {q: rank_index(c, conf, verified, label_aware)[:100] for q, c in candidates.items()}
            for k, v in score_rankings(rankings[name], dataset.solution).items():
                out[f"{name}_{k}" if not k.startswith("num") else k] = v
        out.update(recall_metrics(candidates, rankings["verified"], dataset.solution.subset(None), conf))
        return out
    sol = dataset.solution
    labels = dataset.labels()
    metrics: Dict[str, float] = {}
    for name, verified in (("global", False), ("verified", True)):
        preds = read_predictions(predictions_path(work), verified=verified)
        for k, v in score_predictions(preds, sol).items():
            metrics[f"{name}_{k}" if not k.startswith("num") else k] = v
    relevant = relevant_train_images(sol.subset(None), labels)
    candidates = load_candidates(work, labels, conf.verify.num_to_rerank)
    rankings = {
        name: {q: predict_one(c, conf, verified=verified)[1] for q, c in candidates.items()}
        for name, verified in (("global", False), ("verified", True))
    }
    for name, ranking in rankings.items():
        metrics[f"{name}_map100"] = mean_average_precision(ranking, relevant, 100)
    metrics.update(recall_metrics(candidates, rankings["verified"], relevant, conf))
    return metrics


RECALL_CUTOFFS = (1, 10, 30, 100)


def recall_metrics(candidates: Mapping[str, Candidates], verified: Mapping[str, Sequence[str]],
                   relevant: Mapping[str, Sequence[str]], conf) -> Dict[str, float]:
    """Where a run loses its queries (see the module docstring).

    Args:
        candidates: test id -> its retrieved candidates (global order).
        verified: test id -> ranked ids after re-ranking by verification.
        relevant: test id -> relevant database ids (test images without any are left out).
        conf: the run's configuration (``retrieve.k``, ``verify.num_to_rerank``, ``verify.enabled``).
    """
    retrieved = {q: list(c.db_ids) for q, c in candidates.items()}
    depth = max((len(ids) for ids in retrieved.values()), default=0)
    cutoffs = [k for k in RECALL_CUTOFFS if k <= max(depth, 1)]
    rerank = max(1, min(conf.verify.num_to_rerank, max(depth, 1)))
    recall = recall_at_k(retrieved, relevant, tuple(cutoffs) + (rerank,))
    out: Dict[str, float] = {f"recall_at_{k}": recall[k] for k in cutoffs}
    out["recall_at_rerank"] = recall[rerank]
    out["num_relevant_queries"] = sum(1 for ids in relevant.values() if len(ids))
    if conf.verify.enabled:
        first = recall_at_k(verified, relevant, (1,))[1]
        out["verified_recall_at_1"] = first
        out["verified_confirmed"] = first / recall[rerank] if recall[rerank] > 0 else 0.0
    return out


def score_rankings(rankings: Mapping[str, Sequence[str]], solution: RetrievalSolution) -> Dict[str, float]:
    """mAP@100 of ranked index ids against a retrieval solution, overall and per Usage."""
    scored = solution.subset(None)
    out: Dict[str, float] = {
        "map100": mean_average_precision(rankings, scored, 100),
        "num_test": len(scored),
        "num_relevant_test": sum(1 for v in scored.values() if v),
    }
    for usage in sorted({u for u in solution.usage.values() if u in ("Public", "Private")}):
        out[f"map100_{usage.lower()}"] = mean_average_precision(rankings, solution.subset(usage), 100)
    return out


def evaluate(conf, data: Union[str, Path, Dataset], work: Union[str, Path], overwrite: bool = False) -> Path:
    """Step 6: score a run (see :func:`evaluate_run`) and write ``WORK/metrics.json``.

    Always recomputed (it takes seconds); ``overwrite`` is accepted for a uniform signature.
    """
    metrics = evaluate_run(conf, data, work)
    return write_text_atomic(metrics_path(work), json.dumps(metrics, indent=2))


def format_metrics(metrics: Mapping[str, float]) -> str:
    """One line per metric, for the CLI."""
    return "\n".join(
        f"{k:>22}: {v:.4f}" if isinstance(v, float) else f"{k:>22}: {v}" for k, v in metrics.items()
    )
