"""Kaggle's GLR metrics, as pure functions (no file I/O; :mod:`.evaluate` reads the files).

* GAP (GLR2020 recognition): all predictions sorted by score descending, ties broken by test id
  then landmark id ascending; ``GAP = sum_i P(i) rel(i) / M`` with M the number of test images
  that have a landmark. A prediction on a non-landmark image counts as wrong; a missing/empty
  prediction counts nothing.
* mAP@100 (GLR2021 retrieval): per query ``sum_{i<100, hit} (hits so far / (i + 1)) /
  min(|relevant|, 100)``, repeated ids skipped, averaged over the queries that have relevant
  images. Here a test image's relevant images are the train images of its landmark(s).

Every function checks its inputs first and raises TypeError/ValueError naming the offending key
(e.g. ``predictions['q1']``), so a malformed argument fails loudly instead of scoring wrongly.
"""
from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

if TYPE_CHECKING:  # only for the annotation: metrics never reads files
    from .io.tables import Solution



# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------
def _is_int_like(value: object) -> bool:
    """int or numpy integer (not bool: ``True`` is no landmark id)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_mapping(value: object, name: str, what: str) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping (dict) of {what}, not {type(value).__name__}")


def _check_id_sequence(value: object, where: str, what: str = "ids") -> None:
    """``value`` must be a list/tuple/array of ids, not a str/bytes (whose characters would be ids)."""
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"{where} must be a list of {what}, not a string ({value!r})")
    if not isinstance(value, Sequence) and not hasattr(value, "__array__"):
        raise TypeError(f"{where} must be a list of {what}, not {type(value).__name__}")


def _check_predictions(predictions: object, name: str = "predictions") -> None:
    """``{test id: None or (int landmark id, finite float score)}``."""
    _check_mapping(predictions, name, "test id -> (landmark_id, score) or None")
    for key, p in predictions.items():  # type: ignore[union-attr]
        if p is None:
            continue
        where = f"{name}[{key!r}]"
        if isinstance(p, (str, bytes)) or not isinstance(p, Sequence) or len(p) != 2:
            raise TypeError(f"{where} must be None or a (landmark_id, score) pair, not {p!r}")
        label, score = p
        if not _is_int_like(label):
            raise TypeError(f"{where}: landmark_id must be an integer, not {type(label).__name__} {label!r}")
        if isinstance(score, bool) or not isinstance(score, numbers.Real):
            raise TypeError(f"{where}: score must be a float, not {type(score).__name__} {score!r}")
        if not math.isfinite(float(score)):
            raise ValueError(f"{where}: score must be finite, got {score!r}")


def _check_solution(solution: object, name: str = "solution") -> None:
    """``{test id: sequence of int landmark ids}`` (empty = no landmark)."""
    _check_mapping(solution, name, "test id -> landmark ids")
    for key, labels in solution.items():  # type: ignore[union-attr]
        where = f"{name}[{key!r}]"
        _check_id_sequence(labels, where, "landmark ids (ints)")
        for label in labels:
            if not _is_int_like(label):
                raise TypeError(f"{where} must hold integer landmark ids, found {type(label).__name__} {label!r}")


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def global_average_precision(predictions: Mapping[str, Optional[Tuple[int, float]]],
                             solution: Mapping[str, Sequence[int]]) -> float:
    """Kaggle's GlobalAveragePrecision (micro AP over one prediction per test image).

    Args:
        predictions: test id -> ``(landmark_id, score)`` (int, finite float) or None (no
            prediction).
        solution: test id -> landmark ids (sequence of ints; empty = no landmark). Predictions
            for ids not in the solution are ignored (they are not scored by Kaggle either).

    Returns:
        GAP in [0, 1]; 0.0 when no test image has a landmark.

    Raises:
        TypeError, ValueError: a malformed prediction or solution entry (the key is named).
    """
    _check_predictions(predictions)
    _check_solution(solution)
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
    """Share of test images with a landmark whose prediction is one of their landmarks.

    Args and raises as :func:`global_average_precision`.
    """
    _check_predictions(predictions)
    _check_solution(solution)
    pos = [k for k, v in solution.items() if len(v) > 0]
    if not pos:
        return 0.0
    hits = sum(1 for k in pos if predictions.get(k) is not None and predictions[k][0] in solution[k])
    return hits / len(pos)


def mean_average_precision(predictions: Mapping[str, Sequence[str]],
                           relevant: Mapping[str, Sequence[str]], max_predictions: int = 100) -> float:
    """Kaggle's mAP@``max_predictions`` (GLR2021 retrieval).

    Args:
        predictions: query id -> retrieved ids, best first (a list, not a string).
        relevant: query id -> relevant ids (a list, not a string); queries with none are not
            averaged.
        max_predictions: positive int, the cut-off.

    Returns:
        mAP in [0, 1]; 0.0 when no query has relevant ids.

    Raises:
        TypeError, ValueError: a non-mapping argument, a string where a list of ids is expected
            (the key is named), or a non-positive ``max_predictions``.
    """
    _check_mapping(predictions, "predictions", "query id -> retrieved ids")
    _check_mapping(relevant, "relevant", "query id -> relevant ids")
    for name, mapping in (("predictions", predictions), ("relevant", relevant)):
        for key, ids in mapping.items():
            _check_id_sequence(ids, f"{name}[{key!r}]")
    if not _is_int_like(max_predictions):
        raise TypeError(f"max_predictions must be a positive int, not {type(max_predictions).__name__} "
                        f"{max_predictions!r}")
    if max_predictions <= 0:
        raise ValueError(f"max_predictions must be a positive int, got {max_predictions}")
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


def recall_at_k(rankings: Mapping[str, Sequence[str]], relevant: Mapping[str, Sequence[str]],
                ks: Sequence[int] = (1, 10, 30, 100)) -> Dict[int, float]:
    """Retrieval recall: the share of queries with at least one relevant image among their first
    ``k`` ranked ids (was a correct image retrieved at all?).

    Args:
        rankings: query id -> ranked ids, best first (a list, not a string); a query missing here
            counts as not found.
        relevant: query id -> relevant ids; queries with none are left out (distractors).
        ks: positive ints, the cut-offs.

    Returns:
        ``{k: recall}`` in [0, 1] for each ``k`` (0.0 when no query has relevant ids).

    Raises:
        TypeError, ValueError: a non-mapping argument, a string where a list of ids is expected
            (the key is named), or a cut-off that is not a positive int.
    """
    _check_mapping(rankings, "rankings", "query id -> ranked ids")
    _check_mapping(relevant, "relevant", "query id -> relevant ids")
    for name, mapping in (("rankings", rankings), ("relevant", relevant)):
        for key, ids in mapping.items():
            _check_id_sequence(ids, f"{name}[{key!r}]")
    for k in ks:
        if not _is_int_like(k) or k <= 0:
            raise ValueError(f"recall cut-offs must be positive ints, got {k!r}")
    queries = [q for q, r in relevant.items() if len(r) > 0]
    first_hit = []  # rank (0-based) of each query's first relevant id, or None
    for q in queries:
        rel = set(relevant[q])
        first_hit.append(next((i for i, image_id in enumerate(rankings.get(q, [])) if image_id in rel), None))
    return {int(k): (sum(1 for r in first_hit if r is not None and r < k) / len(queries) if queries else 0.0)
            for k in ks}


def relevant_train_images(solution: Mapping[str, Sequence[int]], labels: Mapping[str, int]) -> Dict[str, List[str]]:
    """Retrieval ground truth: for each test image, the train images of its landmark(s).

    Args:
        solution: test id -> landmark ids (ints; empty = no landmark).
        labels: train id -> landmark id (int).

    Returns:
        test id -> train ids, for the test images that have a landmark.
    """
    _check_solution(solution)
    _check_mapping(labels, "labels", "train id -> landmark id")
    by_label: Dict[int, List[str]] = {}
    for image_id, label in labels.items():
        if not _is_int_like(label):
            raise TypeError(f"labels[{image_id!r}] must be an integer landmark id, "
                            f"not {type(label).__name__} {label!r}")
        by_label.setdefault(int(label), []).append(image_id)
    return {q: [i for lm in lms for i in by_label.get(int(lm), [])] for q, lms in solution.items() if len(lms)}


def score_predictions(predictions: Mapping[str, Optional[Tuple[int, float]]], solution: "Solution") -> Dict[str, float]:
    """GAP and top-1 on all scored rows, and GAP per Usage (Public/Private) when present.

    Args:
        predictions: as :func:`global_average_precision`.
        solution: a :class:`~landmark_retrieval.io.tables.Solution` (``Ignored`` rows are dropped).

    Returns:
        ``{"gap", "top1", "num_test", "num_landmark_test"[, "gap_public", "gap_private"]}``.
    """
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
