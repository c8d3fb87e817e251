"""One writing run per work directory at a time.

A run that writes in a work directory (``run``, the step commands, ``merge``, ``index``,
:func:`landmark_retrieval.pipeline.run`) holds an exclusive OS lock (``flock``) on ``WORK/.lock``
for as long as it runs, and writes its PID and command there. The operating system releases the
lock when the process ends, however it ends: a ``kill -9`` never leaves a stale lock. A second
writing run on the same directory stops at once with one line naming the holder, or waits for it
(``--wait``). Read-only commands (``evaluate``, ``show``) take no lock and run alongside. ``search``
reads an index that must not change under it: it holds the lock *shared* (``shared=True``), so
any number of searches run together while ``index`` waits for them (or they for it). The lock is
re-entrant within a process (the CLI and the pipeline it calls share it); processes that a run
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

#: work directories this process holds: real path -> [fd, depth, shared (0/1)]
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


def _same_file(fd: int, path: Path) -> bool:
    try:
        held, now = os.fstat(fd), os.stat(path)
        return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)
    except FileNotFoundError:
        return False


def _acquire(work: Path, mode: int, wait: bool, waiting_level: int) -> int:
    """An open descriptor of ``WORK/.lock`` locked with ``mode``; retried when the directory was
    removed while this process waited (a finished search's scratch), so that two processes never
    hold locks on two different files of one path."""
    while True:
        work.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path(work), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if not wait:
                    raise WorkDirectoryBusy(f"The work directory {work} is in use by another run ({holder}): wait "
                                            "for it to finish, or run the same command with --wait") from None
                logger.log(waiting_level, "The work directory %s is in use by another run (%s): waiting for it to "
                           "finish", work, holder)
                fcntl.flock(fd, mode)
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, lock_path(work)):
            return fd
        os.close(fd)


def _command() -> str:
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    text = " ".join(argv)
    return text if len(text) <= 300 else text[:297] + "..."


@contextmanager
def work_lock(work: Union[str, Path], wait: bool = False, shared: bool = False,
              waiting_level: int = logging.WARNING) -> Iterator[None]:
    """Hold the work directory's lock while the block runs (created if missing).

    Args:
        work: the work directory.
        wait: wait for another holder to finish instead of raising.
        shared: hold it alongside other shared holders (readers that need the directory not to
            change, such as ``search``); an exclusive holder excludes every other holder.
        waiting_level: log level of the message that says it waits (a search waiting for another's
            short turn is routine: debug).

    Raises:
        WorkDirectoryBusy: another process holds it and ``wait`` is false (the message names its PID
            and command and the fix).
        RuntimeError: this process holds it shared and asks for it exclusive (a programming error:
            upgrading could deadlock two readers).
    """
    work = Path(work)
    key = os.path.realpath(work)
    if key in _HELD:
        if _HELD[key][2] and not shared:
            raise RuntimeError(f"{work}: this process holds the lock shared and cannot take it exclusive")
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    if fcntl is None:  # pragma: no cover
        yield
        return
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    fd = _acquire(work, mode, wait, waiting_level)
    try:
        # the last holder to arrive names itself (shared holders overwrite each other's line)
        line = f"PID {os.getpid()}: {_command()}\n".encode("utf-8", "replace")
        if shared:
            os.pwrite(fd, line.ljust(max(len(line), os.fstat(fd).st_size)), 0)
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, line, 0)
        _HELD[key] = [fd, 1, int(shared)]
        try:
            yield
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # releases the lock
