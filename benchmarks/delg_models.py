"""The realistic-cost DELG model of the benchmarks, exported once and cached outside the repository.

:func:`realistic_delg_model` exports
``landmark_retrieval.testing.export_test_model(..., backbone="resnet50")`` (Keras ResNet-50
architecture with random weights, DELG heads, the official SavedModel interface; nothing is
downloaded) into ``~/.cache/landmark-retrieval-bench`` (or ``$LANDMARK_RETRIEVAL_BENCH_CACHE``) and
returns the cached copy on later calls. The cache key holds the export style, the seed, the
TensorFlow version and a hash of the exporting module, so a change to the network is re-exported.
Exporting takes ~10-20 s and ~110 MB per style.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional, Union

logger = logging.getLogger("landmark_retrieval")

CACHE_ENV = "LANDMARK_RETRIEVAL_BENCH_CACHE"


def cache_dir() -> Path:
    """``$LANDMARK_RETRIEVAL_BENCH_CACHE`` or ``~/.cache/landmark-retrieval-bench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "landmark-retrieval-bench").expanduser()


def _key(style: str, seed: int) -> str:
    import tensorflow as tf

    import landmark_retrieval.testing.delg_export as module

    digest = hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[:10]
    return f"delg-resnet50-{style}-seed{seed}-tf{tf.__version__}-{digest}"


def realistic_delg_model(style: str = "tf1", seed: int = 0, cache: Optional[Union[str, Path]] = None) -> Path:
    """The cached ResNet-50-sized DELG SavedModel (exported on first use).

    Args:
        style: ``"tf1"`` (``prune``, like Kaggle's model) or ``"tf2"`` (``serving_default``).
        seed: weight seed.
        cache: cache directory (default :func:`cache_dir`).

    Returns:
        The SavedModel directory. Written to a temporary sibling and renamed when complete, so an
        interrupted export is never reused.
    """
    root = Path(cache) if cache is not None else cache_dir()
    path = root / _key(style, seed)
    if (path / "saved_model.pb").is_file():
        return path
    from landmark_retrieval.testing import export_test_model

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    export_test_model(tmp, style=style, seed=seed, backbone="resnet50")
    try:
        tmp.rename(path)
    except OSError:  # another process finished the same export first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (path / "saved_model.pb").is_file():
            raise
    logger.info("Exported the ResNet-50-sized DELG test model (%s) to %s in %.1f s", style, path,
                time.perf_counter() - t0)
    return path
