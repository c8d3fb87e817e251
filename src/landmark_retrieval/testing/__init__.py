"""Test helpers: small stand-ins for heavy external assets (no download needed).

* :func:`export_test_model` writes a tiny DELG-architecture SavedModel with the official
  interface, in the TF1 (``prune``) or TF2 (``serving_default``) export style;
* :func:`export_embedding_model` writes a small random-weight embedding network as a ``.keras``
  file, a TF2 SavedModel and (with the ``onnx`` package) an ONNX file, all with the same weights
  (:mod:`landmark_retrieval.testing.embedding_export`).

TensorFlow is imported only when a helper that needs it is called.
"""
from __future__ import annotations


def export_test_model(*args, **kwargs):
    """See :func:`landmark_retrieval.testing.delg_export.export_test_model`."""
    from .delg_export import export_test_model as _export

    return _export(*args, **kwargs)


def export_embedding_model(*args, **kwargs):
    """See :func:`landmark_retrieval.testing.embedding_export.export_embedding_model`."""
    from .embedding_export import export_embedding_model as _export

    return _export(*args, **kwargs)


__all__ = ["export_embedding_model", "export_test_model"]
