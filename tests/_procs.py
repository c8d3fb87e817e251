"""Helpers for tests that interrupt real runs: points of a run to stop at, and what is alive."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple


def _stat(pid: int) -> List[str]:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def group_members(pgid: int) -> List[int]:
    """Live processes of process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = _stat(int(entry.name))
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def wait_gone(pgid: int, timeout: float = 10.0) -> List[int]:
    """Wait until no process of group ``pgid`` is alive; return those still alive."""
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return group_members(pgid)


def shard_count(directory: Path) -> int:
    return len(list(directory.glob("part-*.h5"))) if directory.is_dir() else 0


def verified_lines(work: Path) -> int:
    path = work / "verification.csv"
    return path.read_bytes().count(b"\n") if path.is_file() else 0


POINTS: Dict[str, Callable[[Path], bool]] = {
    # second train shard written (shard_size 2): in the middle of train extraction
    "extract-train": lambda w: shard_count(w / "features" / "train") >= 2,
    # in the middle of test extraction (train done, codebook not fitted yet)
    "extract-test": lambda w: shard_count(w / "features" / "test") >= 2,
    # the verification workers are starting
    "verify-start": lambda w: (w / "verification.json").is_file(),
    # 15 test images verified (10 candidates each)
    "verify": lambda w: verified_lines(w) > 1 + 10 * 15,
}


def interrupt(cmd: List[str], work: Path, point: str, sig: int,
              timeout: float = 120.0) -> Tuple[int, str, int, List[int]]:
    """Start ``cmd`` in a new process group; deliver ``sig`` when ``point`` is reached.

    SIGINT goes to the whole group, as Ctrl-C in a terminal does; other signals to the run only.

    Returns:
        exit code, stderr, the process group id, and the group's members just before the signal.
    """
    # Ctrl-C's default action even when the tests run as a background job (a non-interactive shell
    # starts those with SIGINT ignored, and a child inherits that: Python would never see the signal)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    reached = POINTS[point]
    deadline = time.monotonic() + timeout
    while not reached(work):
        assert proc.poll() is None, f"the run ended before {point}: {proc.communicate()[1].decode()[-2000:]}"
        assert time.monotonic() < deadline, f"{point} not reached in {timeout} s"
        time.sleep(0.005)
    members = group_members(proc.pid)
    if sig == 2:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode(), proc.pid, members
