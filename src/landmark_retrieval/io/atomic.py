"""Files that become final only when complete: write to a temporary name, flush, fsync, rename.

A failed write (full disk, read-only folder) raises :class:`StoreWriteError` naming the path and
what to do: free space and run the same command again.
"""
from __future__ import annotations

import csv
import errno
import io
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence, Union

logger = logging.getLogger("landmark_retrieval")



class StoreWriteError(OSError):
    """Writing features failed (e.g. no space left); finished shards are intact."""


def write_error(path: Union[str, Path], exc: OSError) -> StoreWriteError:
    """A :class:`StoreWriteError` that names ``path`` and says how to recover."""
    reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return StoreWriteError(
        exc.errno, f"Could not write {path}: {reason}. Finished work is kept: free space and run "
                   "the same command again to resume")


def fsync_file(path: Union[str, Path]) -> None:
    """Flush a closed file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Union[str, Path]) -> None:
    """Make a rename in ``directory`` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it to ``final`` and fsync the directory: the file appears complete."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_text_atomic(path: Union[str, Path], text: str) -> Path:
    """Write a small text file completely or not at all (tmp, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        publish(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc
    return path


def write_csv_atomic(path: Union[str, Path], header: Sequence[str], rows: Iterable[Sequence[object]],
                     lineterminator: str = "\n") -> Path:
    """Write a CSV file with the ``csv`` module (any field round-trips), completely or not at all.

    A row with a carriage return in a field is written fully quoted: with a ``"\n"`` line
    terminator the csv module would leave it bare, and it would read back as a line break."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=lineterminator)
    quoted = csv.writer(buf, lineterminator=lineterminator, quoting=csv.QUOTE_ALL)
    for row in (header, *rows):
        (quoted if any("\r" in str(v) for v in row) else w).writerow(row)
    return write_text_atomic(path, buf.getvalue())
