"""Progress bars: shown on a terminal or in Jupyter, off otherwise and with ``-q``.

Library code wraps long loops in :func:`progress`; the package logger writes through
``tqdm.write`` so that log lines never end up glued onto a bar.
"""
from __future__ import annotations

import logging
import sys
from typing import Iterable, Optional, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_ENABLED: Optional[bool] = None  # None: decide from the environment


def set_progress(enabled: Optional[bool]) -> Optional[bool]:
    """Force progress bars on or off (None: on for a terminal or Jupyter, off otherwise).

    Returns:
        The previous setting (to restore it).
    """
    global _ENABLED
    previous, _ENABLED = _ENABLED, enabled
    return previous


def progress_enabled() -> bool:
    if _ENABLED is not None:
        return _ENABLED
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress(iterable: Optional[Iterable[T]] = None, **kwargs) -> "tqdm[T]":
    """``tqdm.auto.tqdm``, disabled when bars are off (see :func:`set_progress`) or ``disable=True``."""
    kwargs["disable"] = bool(kwargs.get("disable", False)) or not progress_enabled()
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


class TqdmHandler(logging.StreamHandler):
    """Logging handler that prints above any active progress bar (on stderr)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)
