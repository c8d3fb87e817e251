"""Feature backends (registered in :mod:`landmark_retrieval.backends.registry`), global
aggregators, the per-split extraction loop (:mod:`~landmark_retrieval.backends.extraction`) and
the Dask engine (:mod:`~landmark_retrieval.backends.cluster`).

:func:`validate_extract` checks the ``extract`` section against the registry; it lives here,
above the registry and the backends whose options it checks.
"""
from __future__ import annotations

from ..config import ExtractConfig
from .aggregators import validate_global
from .embedding_input import validate_embedding
from .ensemble import ensemble_local, ensemble_members
from .learned import ALIKED_MODELS
from .registry import BACKENDS


def validate_extract(extract: "ExtractConfig") -> None:
    """Check the ``extract`` section against the registry, in place: the backend, the
    ``extract.embedding`` choices, the global aggregators' options and an ensemble's members.

    Raises:
        ValueError / KeyError: naming the option and what it takes.
    """
    if extract.backend not in BACKENDS:
        raise ValueError(f"extract.backend: unknown backend {extract.backend!r}; "
                         f"choose one of: {', '.join(BACKENDS)}")
    validate_embedding(extract.embedding, "extract.embedding")
    validate_global(extract)
    if extract.learned.aliked_model not in ALIKED_MODELS:
        raise ValueError(f"extract.learned.aliked_model: expected one of {', '.join(ALIKED_MODELS)}, "
                         f"got {extract.learned.aliked_model!r}")
    if extract.backend == "ensemble":
        ensemble_local(extract, ensemble_members(extract))
