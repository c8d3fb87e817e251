"""Nearest-neighbour search and what shapes the descriptors it searches.

The searchers, registered in one place (:data:`SEARCHERS`, ``retrieve.index``): streamed exact
kNN (:mod:`~landmark_retrieval.search.exact`), faiss IVF-PQ / HNSW indexes
(:mod:`~landmark_retrieval.search.ann`), the sparse inverted file of BoW
(:mod:`~landmark_retrieval.search.inverted`) and ASMK* over local descriptors
(:mod:`~landmark_retrieval.search.asmk`); descriptor post-processing (PCA-whitening, alpha-QE,
DBA: :mod:`~landmark_retrieval.search.postprocess`) and the learned projection
(:mod:`~landmark_retrieval.search.projection`, trained by
:mod:`~landmark_retrieval.search.projection_fit`). :func:`validate_search` checks the ``retrieve``
options that name a searcher.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict

from ..config import RetrieveConfig
from .ann import ann_searcher
from .asmk import asmk_search
from .exact import Searcher, exact_search
from .inverted import inverted_search

#: ``retrieve.index`` name -> searcher (register new methods here, and nowhere else)
SEARCHERS: Dict[str, Searcher] = {
    "exact": exact_search,
    "ivfpq": ann_searcher("ivfpq"),
    "hnsw": ann_searcher("hnsw"),
    "inverted": inverted_search,  # BoW tf-idf: exact top-k through a sparse inverted file
    "asmk": asmk_search,  # ASMK* over the local descriptors: selective kernel, inverted file
}


def index_settings(conf: Any) -> Dict[str, Any]:
    """``retrieve.index`` and the options of its section (``retrieve.<index>``, when it has one):
    what a retrieval result's stamp records of the searcher."""
    section = getattr(conf, conf.index, None)
    return {"name": conf.index, "options": dataclasses.asdict(section) if dataclasses.is_dataclass(section) else None}


def get_searcher(name: str) -> Searcher:
    """The searcher ``retrieve.index`` names, or a ValueError listing the choices."""
    try:
        return SEARCHERS[str(name).strip().lower()]
    except KeyError:
        raise ValueError(f"retrieve.index: unknown searcher {name!r}; choose one of: {', '.join(SEARCHERS)}") from None


def validate_search(r: RetrieveConfig) -> None:
    """Check ``retrieve.index`` (a name of landmark_retrieval.search.SEARCHERS) and its settings."""
    r.index = str(r.index).strip().lower()
    if r.index not in SEARCHERS:
        raise ValueError(f"retrieve.index: unknown searcher {r.index!r}; choose one of: {', '.join(SEARCHERS)}")
    for where, value in (("retrieve.stream_block", r.stream_block), ("retrieve.ivfpq.nlist", r.ivfpq.nlist),
                         ("retrieve.ivfpq.nprobe", r.ivfpq.nprobe), ("retrieve.ivfpq.m", r.ivfpq.m),
                         ("retrieve.ivfpq.refine_factor", r.ivfpq.refine_factor),
                         ("retrieve.ivfpq.train_size", r.ivfpq.train_size), ("retrieve.hnsw.m", r.hnsw.m),
                         ("retrieve.hnsw.ef_construction", r.hnsw.ef_construction),
                         ("retrieve.hnsw.ef_search", r.hnsw.ef_search), ("retrieve.asmk.num_words", r.asmk.num_words),
                         ("retrieve.asmk.query_assignments", r.asmk.query_assignments),
                         ("retrieve.asmk.max_training_descriptors", r.asmk.max_training_descriptors),
                         ("retrieve.asmk.iterations", r.asmk.iterations)):
        if value < 1:
            raise ValueError(f"{where}: expected a positive integer, got {value}")
    if r.asmk.max_keypoints is not None and r.asmk.max_keypoints < 1:
        raise ValueError(f"retrieve.asmk.max_keypoints: expected a positive integer or none, got "
                         f"{r.asmk.max_keypoints}")
    if not (math.isfinite(r.asmk.global_weight) and r.asmk.global_weight >= 0):
        raise ValueError(f"retrieve.asmk.global_weight: expected a number >= 0 (0 = the kernel alone), got "
                         f"{r.asmk.global_weight}")
    if not (math.isfinite(r.asmk.alpha) and r.asmk.alpha > 0):
        raise ValueError(f"retrieve.asmk.alpha: expected a positive exponent (3 is usual), got {r.asmk.alpha}")
    if not -1.0 <= r.asmk.threshold < 1.0:
        raise ValueError(f"retrieve.asmk.threshold: expected a similarity in [-1, 1) (0 is usual), got "
                         f"{r.asmk.threshold}")
    if not 1 <= r.ivfpq.bits <= 16:
        raise ValueError(f"retrieve.ivfpq.bits: expected 1 to 16 bits per code (8 is usual), got {r.ivfpq.bits}")
    if not (math.isfinite(r.stream_above_gb) and r.stream_above_gb >= 0):
        raise ValueError(f"retrieve.stream_above_gb: expected a size in GB >= 0, got {r.stream_above_gb}")
