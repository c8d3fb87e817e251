"""A full disk loses nothing and is recoverable; a damaged shard is set aside, never trusted."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from landmark_retrieval import cli
from landmark_retrieval.io.store import FeatureStore, validate_shard
from landmark_retrieval.io.writer import ShardWriter

SETTINGS = ["--preset", "demo", "--set", "verify.num_workers=1", "--set", "extract.shard_size=4"]


def run_args(data: Path, work: Path, out: Path):
    return ["run", "--data", str(data), "--work", str(work), "--out", str(out), *SETTINGS]


@pytest.fixture(scope="module")
def reference(small_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    assert cli.main(["-q", *run_args(small_dataset, root / "work", root / "submission.csv")]) == 0
    return {
        "submission.csv": (root / "submission.csv").read_bytes(),
        "retrieval.h5": (root / "work" / "retrieval.h5").read_bytes(),
        "verification.csv": (root / "work" / "verification.csv").read_bytes(),
    }


def check_identical(work: Path, out: Path, reference) -> None:
    assert out.read_bytes() == reference["submission.csv"]
    assert (work / "retrieval.h5").read_bytes() == reference["retrieval.h5"]
    assert (work / "verification.csv").read_bytes() == reference["verification.csv"]


def check_stores_sound(work: Path) -> None:
    """Every shard under its final name is complete; no temporary file is left."""
    shards = list((work / "features").rglob("*-*.h5"))
    assert all(validate_shard(p) is None for p in shards if p.parent.name != "damaged")
    assert not list((work / "features").rglob("*.tmp"))


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 6 MB tmpfs (root only); skipped where mounting is not allowed."""
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_full_disk_then_free_space_resumes(small_dataset, reference, tiny_disk, tmp_path):
    work, out = tiny_disk / "work", tmp_path / "submission.csv"
    cmd = [sys.executable, "-m", "landmark_retrieval", *run_args(small_dataset, work, out)]
    full = subprocess.run(cmd, capture_output=True, text=True)
    assert full.returncode == 1, full.stderr[-3000:]
    assert "no space left on device" in full.stderr.lower()
    assert "free space and run the same command again" in full.stderr
    assert str(tiny_disk) in full.stderr  # the message names the path
    assert "Traceback" not in full.stderr
    assert not out.exists()
    check_stores_sound(work)
    kept = len(FeatureStore(work / "features" / "train").local_ids)
    assert kept > 0  # finished shards were kept

    # free space: the same command resumes and gives the results of an uninterrupted run
    subprocess.run(["mount", "-o", "remount,size=200m", str(tiny_disk)], check=True)
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{kept} already extracted" in again.stderr
    check_identical(work, out, reference)


def test_injected_enospc_in_the_middle_of_an_image(small_dataset, reference, tmp_path, monkeypatch, caplog):
    """Without a tmpfs: the disk fills up while an image's datasets are being written."""
    import h5py

    real = h5py.Group.create_dataset
    calls = {"n": 0}

    def failing(self, name, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4 * 6 + 3:  # the 7th image, after its keypoints and descriptors
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, name, *args, **kwargs)

    work, out = tmp_path / "work", tmp_path / "submission.csv"
    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    assert cli.main(["-q", *run_args(small_dataset, work, out)]) == 1
    assert "free space and run the same command again" in caplog.text
    assert "part-00001.h5" in caplog.text  # the shard being written is named
    check_stores_sound(work)
    train = FeatureStore(work / "features" / "train")
    assert len(train.local_ids) == 4  # the first shard is complete; the one being written is dropped
    assert all(len(train.local(i).scores) == len(train.local(i)) for i in train.local_ids)
    monkeypatch.setattr(h5py.Group, "create_dataset", real)
    assert cli.main(["-q", *run_args(small_dataset, work, out)]) == 0
    check_identical(work, out, reference)


def test_damaged_shards_are_set_aside_and_redone(small_dataset, reference, tmp_path, caplog):
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    assert cli.main(["-q", *run_args(small_dataset, work, out)]) == 0
    train = work / "features" / "train"
    # a truncated shard and a shard without its completion mark, both under final names
    truncated, unmarked = train / "part-00001.h5", train / "part-00002.h5"
    truncated.write_bytes(truncated.read_bytes()[:5000])
    import h5py

    with h5py.File(unmarked, "a") as f:
        del f.attrs["complete"]
    before = FeatureStore(train)  # readers skip them (with a warning) ...
    assert "Ignoring damaged feature shard" in caplog.text
    assert len(before.local_ids) == len(FeatureStore(train).local_ids)
    out.unlink()
    assert cli.main(["-q", *run_args(small_dataset, work, out)]) == 0
    # ... and the extract step moves them aside and extracts their images again
    damaged = sorted(p.name for p in (train / "damaged").iterdir())
    assert damaged == ["part-00001.h5", "part-00002.h5"]
    assert "moved to" in caplog.text
    check_stores_sound(work)
    check_identical(work, out, reference)


def test_interrupted_add_leaves_no_partial_image(tmp_path):
    """A KeyboardInterrupt in the middle of an image: the finished images are kept, not it."""
    import numpy as np

    from landmark_retrieval.features import Features

    def feats(n):
        return Features(np.zeros((n, 2), np.float32), np.ones((n, 4), np.float32) / 2,
                        np.ones(n, np.float32), np.ones(n, np.float32), (10, 10))

    class Boom(np.ndarray):
        def astype(self, *a, **k):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(tmp_path, shard_size=10) as w:
            w.add("a", feats(3))
            bad = feats(3)
            bad.scores = np.ones(3, np.float32).view(Boom)
            w.add("b", bad)
    store = FeatureStore(tmp_path)
    assert store.local_ids == ["a"]
    assert validate_shard(tmp_path / "part-00000.h5") is None
