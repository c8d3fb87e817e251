"""Interruption and resume: a real run killed at several points, then run again, gives the
byte-identical retrieval.h5, verification.csv and submission.csv of an uninterrupted run, and
its worker processes end with it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and signals")]

SETTINGS = ["--preset", "demo", "--set", "verify.num_to_rerank=10", "--set", "verify.num_workers=2"]
ARTIFACTS = ("retrieval.h5", "verification.csv")


def cli(data: Path, work: Path, out: Path, *extra: str) -> List[str]:
    return [sys.executable, "-m", "landmark_retrieval", "run", "--data", str(data), "--work", str(work),
            "--out", str(out), *SETTINGS, *extra]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from landmark_retrieval.demo import DemoSpec, build_demo_dataset

    return build_demo_dataset(tmp_path_factory.mktemp("interrupt") / "data", DemoSpec(seed=5))


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Dict[str, bytes]:
    """An uninterrupted run with the default shard size."""
    root = tmp_path_factory.mktemp("reference")
    subprocess.run(cli(dataset, root / "work", root / "submission.csv"), check=True, capture_output=True)
    out = {name: (root / "work" / name).read_bytes() for name in ARTIFACTS}
    out["submission.csv"] = (root / "submission.csv").read_bytes()
    return out


def children(pid: int) -> List[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


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
    # a third of the test images verified
    "verify": lambda w: verified_lines(w) > 1 + 10 * 15,
}


def interrupt(cmd: List[str], work: Path, point: str, sig: int, timeout: float = 120.0):
    """Start ``cmd`` in its own process group, deliver ``sig`` when ``point`` is reached."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    reached = POINTS[point]
    deadline = time.monotonic() + timeout
    while not reached(work):
        assert proc.poll() is None, f"the run ended before {point}: {proc.communicate()[1].decode()[-2000:]}"
        assert time.monotonic() < deadline, f"{point} not reached in {timeout} s"
        time.sleep(0.005)
    kids = children(proc.pid)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # as Ctrl-C in a terminal: the whole foreground group
    else:
        os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode(), kids


@pytest.mark.parametrize("point,sig", [
    ("extract-train", signal.SIGINT),
    ("extract-test", signal.SIGKILL),
    ("verify-start", signal.SIGINT),
    ("verify", signal.SIGKILL),
    ("verify", signal.SIGTERM),
])
def test_interrupted_run_resumes_to_identical_results(dataset, reference, tmp_path, point, sig):
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    cmd = cli(dataset, work, out, "--set", "extract.shard_size=2")
    code, err, kids = interrupt(cmd, work, point, sig)

    assert not out.exists(), "the run was not interrupted before its end"
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        expected = 130 if sig == signal.SIGINT else 128 + signal.SIGTERM
        assert code == expected, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert err.count("finished work is kept; run the same command again to resume") == 1, err[-3000:]
    # the run's processes (verification workers, multiprocessing's resource tracker) end with it
    deadline = time.monotonic() + 10
    while any(alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [k for k in kids if alive(k)], f"processes left behind after {signal.Signals(sig).name}"

    done = subprocess.run(cmd, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    for name in ARTIFACTS:
        assert (work / name).read_bytes() == reference[name], f"{name} differs after resuming from {point}"
    assert out.read_bytes() == reference["submission.csv"]


def test_shard_size_does_not_change_results(dataset, reference, tmp_path):
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    subprocess.run(cli(dataset, work, out, "--set", "extract.shard_size=5"), check=True, capture_output=True)
    for name in ARTIFACTS:
        assert (work / name).read_bytes() == reference[name], name
    assert out.read_bytes() == reference["submission.csv"]
