"""Processes end with the run: verification workers and multiprocessing's resource tracker exit
when the parent is killed (-9) or terminated; SIGTERM behaves like Ctrl-C (finished work kept,
one clear line, exit code 143); an early Ctrl-C while workers start prints one message."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import interrupt, wait_gone

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and signals")]

SETTINGS = ["--preset", "demo", "--set", "verify.num_to_rerank=10", "--set", "verify.num_workers=2"]
RESUME_LINE = "finished work is kept; run the same command again to resume"


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> tuple:
    """A dataset with features and retrieval done (verification not yet), and the full result."""
    from landmark_retrieval.demo import DemoSpec, build_demo_dataset

    root = tmp_path_factory.mktemp("processes")
    data = build_demo_dataset(root / "data", DemoSpec(seed=7))
    work = root / "work"
    base = [sys.executable, "-m", "landmark_retrieval"]
    for step in (["extract", "--data", str(data)], ["retrieve", "--data", str(data)]):
        subprocess.run([*base, step[0], *step[1:], "--work", str(work), *SETTINGS], check=True, capture_output=True)
    full = root / "full"
    shutil.copytree(work, full)
    subprocess.run([*base, "verify", "--work", str(full), *SETTINGS], check=True, capture_output=True)
    return work, (full / "verification.csv").read_bytes()


def verify_cmd(work: Path):
    return [sys.executable, "-m", "landmark_retrieval", "verify", "--work", str(work), *SETTINGS]


def test_kill_9_of_the_parent_ends_workers_and_tracker(extracted, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(extracted[0], work)
    code, _, group, members = interrupt(verify_cmd(work), work, "verify", signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert len(members) >= 3, members  # the run (a worker too), a worker and the resource tracker
    assert wait_gone(group) == []


def test_sigterm_is_like_ctrl_c(extracted, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(extracted[0], work)
    code, err, group, _ = interrupt(verify_cmd(work), work, "verify", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.count(RESUME_LINE) == 1 and "Terminated" in err
    assert wait_gone(group) == []
    kept = (work / "verification.csv").read_bytes()
    assert kept.count(b"\n") > 1 + 10 * 15  # finished test images were kept
    subprocess.run(verify_cmd(work), check=True, capture_output=True)
    assert (work / "verification.csv").read_bytes() == extracted[1]


def test_early_ctrl_c_while_workers_start_prints_one_message(extracted, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(extracted[0], work)
    code, err, group, _ = interrupt(verify_cmd(work), work, "verify-start", signal.SIGINT)
    assert code == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.count(RESUME_LINE) == 1
    assert wait_gone(group) == []
    subprocess.run(verify_cmd(work), check=True, capture_output=True)
    assert (work / "verification.csv").read_bytes() == extracted[1]
