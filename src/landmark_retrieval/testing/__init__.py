"""Test helpers: small stand-ins for heavy external assets (no download needed).

* :func:`export_test_model` writes a tiny DELG-architecture SavedModel with the official
  interface, in the TF1 (``prune``) or TF2 (``serving_default``) export style.

TensorFlow is imported only when a helper that needs it is called.
"""
from __future__ import annotations


def export_test_model(*args, **kwargs):
    """See :func:`landmark_retrieval.testing.delg_export.export_test_model`."""
    from .delg_export import export_test_model as _export

    return _export(*args, **kwargs)


__all__ = ["export_test_model"]
