"""Feature-extraction backends: ``sift`` (RootSIFT + VLAD) and ``delg`` (DELG SavedModel)."""
from __future__ import annotations

from ..config import ExtractConfig
from .base import Backend, Features, GlobalAggregator

BACKENDS = ("sift", "delg")


def make_backend(conf: ExtractConfig) -> Backend:
    """Instantiate the backend named by ``conf.backend``.

    TensorFlow is imported only for ``delg``.
    """
    if conf.backend == "sift":
        from .sift import SiftBackend

        return SiftBackend(conf)
    if conf.backend == "delg":
        from .delg import DelgBackend

        return DelgBackend(conf)
    raise ValueError(f"Unknown backend {conf.backend!r}; choose one of {BACKENDS}")


__all__ = ["Backend", "Features", "GlobalAggregator", "make_backend", "BACKENDS"]
