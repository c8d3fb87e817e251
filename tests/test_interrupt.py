"""Interruption and resume: a real run killed at several points, then run again, gives the
byte-identical retrieval.h5, verification.csv and submission.csv of an uninterrupted run, and
no process of it survives. (Signals during verification in detail: test_processes.py.)"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from _procs import interrupt, wait_gone

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


@pytest.mark.parametrize("point,sig", [
    ("extract-train", signal.SIGINT),
    ("extract-test", signal.SIGKILL),
    ("verify", signal.SIGKILL),
])
def test_interrupted_run_resumes_to_identical_results(dataset, reference, tmp_path, point, sig):
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    cmd = cli(dataset, work, out, "--set", "extract.shard_size=2")
    code, err, group, members = interrupt(cmd, work, point, sig)

    assert not out.exists(), "the run was not interrupted before its end"
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 130, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert err.count("finished work is kept; run the same command again to resume") == 1, err[-3000:]
    if point == "verify":
        assert len(members) >= 3  # the run (a worker too), a worker and multiprocessing's resource tracker
    assert wait_gone(group) == [], f"processes left behind after {signal.Signals(sig).name}"

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
