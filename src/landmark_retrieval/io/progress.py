"""Progress bars: shown on a terminal or in Jupyter, off otherwise and with ``-q``.

Library code wraps long loops in :func:`progress`; the package logger writes through
``tqdm.write`` so that log lines never end up glued onto a bar.

Every step of a bar can also be observed (:func:`observe_progress`): the time budget of a run
(:mod:`landmark_retrieval.budget`) measures throughput there and stops optional work at a safe
point, after an image or a test image is finished, whether bars are shown or not.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional, Tuple, TypeVar

if TYPE_CHECKING:  # imported where used: a process that shows no bar (a worker) never loads tqdm
    from tqdm.auto import tqdm

T = TypeVar("T")

_ENABLED: Optional[bool] = None  # None: decide from the environment

#: ``callback(desc, done, total)`` of the bars made in this context (see :func:`observe_progress`)
Observer = Callable[[str, int, Optional[int]], None]
_OBSERVERS: "contextvars.ContextVar[Tuple[Observer, ...]]" = contextvars.ContextVar(
    "landmark_retrieval_progress_observers", default=())


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
    """``tqdm.auto.tqdm``, disabled when bars are off (see :func:`set_progress`) or ``disable=True``;
    observed when :func:`observe_progress` is active."""
    from tqdm.auto import tqdm

    kwargs["disable"] = bool(kwargs.get("disable", False)) or not progress_enabled()
    kwargs.setdefault("dynamic_ncols", True)
    bar = tqdm(iterable, **kwargs)
    observers = _OBSERVERS.get()
    if observers:
        return ObservedBar(bar, str(kwargs.get("desc") or ""), observers)  # type: ignore[return-value]
    return bar


@contextlib.contextmanager
def observe_progress(callback: Observer) -> Iterator[None]:
    """Call ``callback(desc, done, total)`` for the bars made inside this block (in this thread or
    task): once with ``done = 0`` when a bar is made, then after every finished item (``done``
    counts them; ``total`` as the bar knows it, or None). The callback may raise to stop the loop
    at that point: the item before is finished (an image stored, a test image verified)."""
    token = _OBSERVERS.set(_OBSERVERS.get() + (callback,))
    try:
        yield
    finally:
        _OBSERVERS.reset(token)


class ObservedBar:
    """A tqdm bar whose steps are reported to observers (see :func:`observe_progress`)."""

    def __init__(self, bar: "tqdm", desc: str, observers: Tuple[Observer, ...]):
        self._bar, self._desc, self._observers, self._done = bar, desc, observers, 0
        try:
            self._notify(0)  # an observer may stop the loop before it starts
        except BaseException:
            bar.close()
            raise

    def _notify(self, n: int) -> None:
        self._done += n
        for callback in self._observers:
            callback(self._desc, self._done, self._bar.total)

    def __iter__(self):
        inner = iter(self._bar)
        try:
            for item in inner:
                yield item
                self._notify(1)  # the consumer finished the item
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()

    def update(self, n: int = 1):
        result = self._bar.update(n)
        self._notify(n)
        return result

    def __enter__(self) -> "ObservedBar":
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bar.__exit__(*exc)

    def __getattr__(self, name: str):
        return getattr(self._bar, name)


class TqdmHandler(logging.StreamHandler):
    """Logging handler that prints above any active progress bar (on stderr)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "tqdm" not in sys.modules:  # no bar can be shown: no need to load tqdm
                sys.stderr.write(self.format(record) + "\n")
                sys.stderr.flush()
                return
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)
