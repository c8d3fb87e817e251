"""Straightforward reference implementations, for tests and benchmarks (slow, obviously right).

:func:`reference_matches` is putative matching as it was written before it was optimised
(issue 11): the float32 similarity matrix, ``argmax`` per row, the second neighbour from
``np.partition``, the mutual check from ``argmax`` over columns, then (new) the cap on the
number of matches by a full sort. :func:`landmark_retrieval.matching.pairs.match_descriptors` must
return exactly the same matches.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def reference_matches(desc0: np.ndarray, desc1: np.ndarray, max_distance: float = 0.9,
                      ratio_test: Optional[float] = None, mutual: bool = False,
                      max_matches: Optional[int] = None) -> np.ndarray:
    """Nearest-neighbour matches (see :func:`landmark_retrieval.matching.pairs.match_descriptors`).

    Args:
        desc0: (N0, D) float32; desc1: (N1, D) float32 unit rows.

    Returns:
        (K, 2) int64 ``(i0, i1)`` ordered by i0.
    """
    n0, n1 = len(desc0), len(desc1)
    if n0 == 0 or n1 == 0:
        return np.zeros((0, 2), np.int64)
    sim = np.asarray(desc0, np.float32) @ np.asarray(desc1, np.float32).T
    nn = np.argmax(sim, axis=1)
    best = sim[np.arange(n0), nn]
    dist = np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0))
    keep = dist < max_distance
    if ratio_test is not None and n1 >= 2:
        second = np.partition(sim, n1 - 2, axis=1)[:, n1 - 2]
        dist2 = np.sqrt(np.maximum(2.0 - 2.0 * second, 0.0))
        keep &= dist < ratio_test * dist2
    if mutual:
        back = np.argmax(sim, axis=0)
        keep &= back[nn] == np.arange(n0)
    i0 = np.nonzero(keep)[0]
    if max_matches is not None and len(i0) > max_matches:
        order = np.lexsort((i0, -best[i0]))  # most similar first; ties: lower i0
        i0 = np.sort(i0[order[:max_matches]])
    return np.stack([i0, nn[i0]], axis=1).astype(np.int64)


