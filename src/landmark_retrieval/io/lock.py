"""One writing run per work directory at a time.

A run that writes in a work directory (``run``, the step commands, ``merge``,
:func:`landmark_retrieval.pipeline.run`) holds an exclusive OS lock (``flock``) on ``WORK/.lock``
for as long as it runs, and writes its PID and command there. The operating system releases the
lock when the process ends, however it ends: a ``kill -9`` never leaves a stale lock. A second
writing run on the same directory stops at once with one line naming the holder, or waits for it
(``--wait``). Read-only commands (``evaluate``, ``show``) take no lock and run alongside. The lock
is re-entrant within a process (the CLI and the pipeline it calls share it); processes that a run
spawns (verification workers) only read.
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Union

from .layout import lock_path

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("landmark_retrieval")

#: work directories this process holds: real path -> [fd, depth]
_HELD: Dict[str, List[int]] = {}


class WorkDirectoryBusy(RuntimeError):
    """Another process holds the work directory's lock."""


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text.splitlines()[0] if text else "a process that has not written its name yet"


def _command() -> str:
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    text = " ".join(argv)
    return text if len(text) <= 300 else text[:297] + "..."


@contextmanager
def work_lock(work: Union[str, Path], wait: bool = False) -> Iterator[None]:
    """Hold the work directory's lock while the block runs (created if missing).

    Args:
        work: the work directory.
        wait: wait for another holder to finish instead of raising.

    Raises:
        WorkDirectoryBusy: another process holds it and ``wait`` is false (the message names its PID
            and command and the fix).
    """
    work = Path(work)
    key = os.path.realpath(work)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    if fcntl is None:  # pragma: no cover
        yield
        return
    work.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(work), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise WorkDirectoryBusy(f"The work directory {work} is in use by another run ({holder}): wait for it "
                                        "to finish, or run the same command with --wait") from None
            logger.warning("The work directory %s is in use by another run (%s): waiting for it to finish", work,
                           holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"PID {os.getpid()}: {_command()}\n".encode("utf-8", "replace"))
        _HELD[key] = [fd, 1]
        try:
            yield
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # releases the lock
