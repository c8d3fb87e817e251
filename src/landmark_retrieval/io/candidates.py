"""Candidates: the retrieved neighbours of each test image joined with their verification.

The one place that reads ``retrieval.h5`` and ``verification.csv`` together; used by predict,
evaluate, visualize and the demo.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from .layout import load_retrieval, load_verification, retrieval_path, verification_path


@dataclass
class Candidates:
    """Retrieved and verified neighbours of one test image, in retrieval order."""

    db_ids: List[str]
    labels: np.ndarray  # (R,) int64 landmark of each neighbour
    global_scores: np.ndarray  # (R,) float32 cosine similarities
    inliers: np.ndarray  # (R,) int64, first num_to_rerank only (0 when not verified)
    num_matches: np.ndarray  # (R,) int64 putative matches, likewise
    query_label: int = -1  # retrieval task, label-aware: the query's inferred landmark (-1: unknown)


def load_candidates(work: Union[str, Path], labels: Optional[Mapping[str, int]], num_to_rerank: int,
                    query_ids: Optional[Sequence[str]] = None) -> Dict[str, Candidates]:
    """Join ``retrieval.h5`` and ``verification.csv`` (if present) per test image.

    Args:
        work: the run's work directory.
        labels: train id -> landmark id (recognition). None for the retrieval task: the index
            images' inferred landmarks when the run is label-aware, else -1.
        num_to_rerank: how many of the first neighbours carry verification results.
        query_ids: only these test images (default: every test image with neighbours).

    Raises:
        KeyError: a requested test image has no retrieval result (naming a few that have).
    """
    retrieval = load_retrieval(retrieval_path(work))
    verification = load_verification(verification_path(work))
    rows = {q: i for i, q in enumerate(retrieval.query_ids)}
    if query_ids is None:
        query_ids = retrieval.query_ids
    out: Dict[str, Candidates] = {}
    for q in query_ids:
        if q not in rows:
            sample = ", ".join(retrieval.query_ids[:5])
            raise KeyError(f"Test image {q!r} has no retrieval result in {work} (known test ids include: "
                           f"{sample}); its features may have failed: see failures.csv")
        row = rows[q]
        ids = [retrieval.db_ids[j] for j in retrieval.indices[row]]
        ver = verification.get(q, {})
        inl = np.zeros(len(ids), np.int64)
        nm = np.zeros(len(ids), np.int64)
        for r, db_id in enumerate(ids[:num_to_rerank]):
            nm[r], inl[r] = ver.get(db_id, (0, 0))
        if labels is not None:
            lab = np.array([labels[i] for i in ids], np.int64)
        elif retrieval.db_labels is not None:
            lab = retrieval.db_labels[retrieval.indices[row]].astype(np.int64)
        else:
            lab = np.full(len(ids), -1, np.int64)
        query_label = int(retrieval.query_labels[row]) if retrieval.query_labels is not None else -1
        out[q] = Candidates(ids, lab, retrieval.scores[row].astype(np.float32), inl, nm, query_label)
    return out
