"""Step 6: local scoring, as Kaggle scores GLR submissions.

* GAP (GLR2020 recognition): all predictions sorted by score descending, ties broken by test id
  then landmark id ascending; ``GAP = sum_i P(i) rel(i) / M`` with M the number of test images
  that have a landmark. A prediction on a non-landmark image counts as wrong; a missing/empty
  prediction counts nothing.
* mAP@100 (GLR2021 retrieval): per query ``sum_{i<100, hit} (hits so far / (i + 1)) /
  min(|relevant|, 100)``, repeated ids skipped, averaged over the queries that have relevant
  images. Here a test image's relevant images are the train images of its landmark(s).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .dataset import Dataset, Solution, load_dataset, read_solution_csv

logger = logging.getLogger("landmark_retrieval")


def global_average_precision(predictions: Mapping[str, Optional[Tuple[int, float]]],
                             solution: Mapping[str, Sequence[int]]) -> float:
    """Kaggle's GlobalAveragePrecision (micro AP over one prediction per test image).

    Args:
        predictions: test id -> ``(landmark_id, score)`` or None (no prediction).
        solution: test id -> landmark ids (empty = no landmark). Predictions for ids not in
            the solution are ignored (they are not scored by Kaggle either).

    Returns:
        GAP in [0, 1]; 0.0 when no test image has a landmark.
    """
    num_positives = sum(1 for v in solution.values() if len(v) > 0)
    if num_positives == 0:
        return 0.0
    preds = [(k, int(p[0]), float(p[1])) for k, p in predictions.items() if p is not None and k in solution]
    preds.sort(key=lambda t: (t[0], t[1]))  # id asc, class asc ...
    preds.sort(key=lambda t: t[2], reverse=True)  # ... then score desc (stable)
    correct = 0
    gap = 0.0
    for total, (key, label, _) in enumerate(preds, start=1):
        if label in solution[key]:
            correct += 1
            gap += correct / total
    return gap / num_positives


def top1_accuracy(predictions: Mapping[str, Optional[Tuple[int, float]]],
                  solution: Mapping[str, Sequence[int]]) -> float:
    """Share of test images with a landmark whose prediction is one of their landmarks."""
    pos = [k for k, v in solution.items() if len(v) > 0]
    if not pos:
        return 0.0
    hits = sum(1 for k in pos if predictions.get(k) is not None and predictions[k][0] in solution[k])
    return hits / len(pos)


def mean_average_precision(predictions: Mapping[str, Sequence[str]],
                           relevant: Mapping[str, Sequence[str]], max_predictions: int = 100) -> float:
    """Kaggle's mAP@``max_predictions`` (GLR2021 retrieval).

    Args:
        predictions: query id -> retrieved ids, best first.
        relevant: query id -> relevant ids; queries with none are not averaged.

    Returns:
        mAP in [0, 1]; 0.0 when no query has relevant ids.
    """
    queries = [q for q, r in relevant.items() if len(r) > 0]
    if not queries:
        return 0.0
    total = 0.0
    for q in queries:
        rel = set(relevant[q])
        seen = set()
        hits = 0
        ap = 0.0
        for i, image_id in enumerate(list(predictions.get(q, []))[:max_predictions]):
            if image_id in seen:
                continue
            seen.add(image_id)
            if image_id in rel:
                hits += 1
                ap += hits / (i + 1)
        total += ap / min(len(rel), max_predictions)
    return total / len(queries)


def relevant_train_images(solution: Mapping[str, Sequence[int]], labels: Mapping[str, int]) -> Dict[str, List[str]]:
    """Retrieval ground truth: for each test image, the train images of its landmark(s)."""
    by_label: Dict[int, List[str]] = {}
    for image_id, label in labels.items():
        by_label.setdefault(int(label), []).append(image_id)
    return {q: [i for lm in lms for i in by_label.get(int(lm), [])] for q, lms in solution.items() if lms}


def score_predictions(predictions: Mapping[str, Optional[Tuple[int, float]]], solution: Solution) -> Dict[str, float]:
    """GAP and top-1 on all scored rows, and GAP per Usage (Public/Private) when present."""
    scored = solution.subset(None)
    out = {
        "gap": global_average_precision(predictions, scored),
        "top1": top1_accuracy(predictions, scored),
        "num_test": len(scored),
        "num_landmark_test": sum(1 for v in scored.values() if v),
    }
    for usage in sorted({u for u in solution.usage.values() if u in ("Public", "Private")}):
        out[f"gap_{usage.lower()}"] = global_average_precision(predictions, solution.subset(usage))
    return out


def evaluate(submission: Union[str, Path], solution: Union[str, Path, Solution],
             json_out: Optional[Union[str, Path]] = None) -> Dict[str, float]:
    """Score a ``submission.csv`` against a Kaggle ``solution.csv``.

    Returns:
        ``{"gap", "top1", "num_test", "num_landmark_test"[, "gap_public", "gap_private"]}``.
    """
    from .submit import read_submission

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
    """Score a pipeline run from its work directory: GAP and mAP@100, global-only and verified."""
    from .predict import load_candidates, predict_one, predictions_path, read_predictions

    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    if dataset.solution is None:
        raise FileNotFoundError(f"No solution.csv in {dataset.root}: nothing to evaluate against")
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
    return metrics


def format_metrics(metrics: Mapping[str, float]) -> str:
    """One line per metric, for the CLI."""
    return "\n".join(
        f"{k:>22}: {v:.4f}" if isinstance(v, float) else f"{k:>22}: {v}" for k, v in metrics.items()
    )
