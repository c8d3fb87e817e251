"""Bad images and awkward ids in a real run: bounded memory on a huge photo, decompression bombs
refused, blank and truncated images reported, ids with commas, quotes and newlines round-trip
through every artifact, and a broken solution.csv never costs the submission."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from landmark_retrieval import cli
from landmark_retrieval.io.dataset import image_path
from landmark_retrieval.io.images import ImageTooLargeError, decode_image
from landmark_retrieval.io.layout import load_verification
from landmark_retrieval.io.store import FeatureStore
from landmark_retrieval.io.submission import read_submission
from landmark_retrieval.io.tables import read_train_csv

SETTINGS = ["--preset", "demo", "--set", "verify.num_workers=1"]


def read_csv(path: Path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def add_test_image(root: Path, image_id: str, image: Image.Image, fmt: str = "JPEG", **kwargs) -> Path:
    path = root / "test" / "x" / f"{image_id}.{'jpg' if fmt == 'JPEG' else fmt.lower()}"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kwargs)
    return path


def photo(size=(640, 480)) -> Image.Image:
    from landmark_retrieval.demo import load_photo

    return Image.fromarray(load_photo("astronaut")).resize(size, Image.BILINEAR)


# --------------------------------------------------------------------------------------------
# Decoding in bounded memory
# --------------------------------------------------------------------------------------------
def test_large_jpeg_is_decoded_reduced_with_original_size(tmp_path):
    path = tmp_path / "big.jpg"
    photo((4000, 3000)).save(path, quality=90)
    full = decode_image(path)
    assert full.array.shape == (3000, 4000, 3) and full.factors == (1.0, 1.0)
    small = decode_image(path, max_pixels=1_000_000)
    h, w = small.array.shape[:2]
    assert w * h <= 1_000_000 and abs(w / h - 4 / 3) < 0.01 and w >= 1150
    assert small.original_size == (4000, 3000)
    np.testing.assert_allclose(small.factors, (w / 4000, h / 3000))
    # the reduced decode shows the same picture
    ref = np.asarray(Image.fromarray(full.array).resize((w, h), Image.BILINEAR), np.float32)
    assert np.abs(ref - small.array).mean() < 6


def test_normal_images_are_decoded_exactly_as_before(tmp_path):
    """Under max_pixels nothing changes: the kaggle-baseline preset sees the raw image."""
    path = tmp_path / "n.jpg"
    photo((800, 600)).save(path, quality=90)
    with Image.open(path) as img:
        raw = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(decode_image(path, max_pixels=8_000_000).array, raw)


@pytest.mark.parametrize("orientation", [6, 8])
def test_reduced_decode_applies_exif_orientation(tmp_path, orientation):
    src = np.zeros((300, 400, 3), np.uint8)
    src[:150, :200] = 255  # white top-left quadrant
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(src).save(tmp_path / "r.jpg", quality=95, exif=exif)
    full = decode_image(tmp_path / "r.jpg").array
    small = decode_image(tmp_path / "r.jpg", max_pixels=30_000)
    assert small.original_size == (300, 400)
    assert full.shape[:2] == (400, 300) and small.array.shape[0] > small.array.shape[1]
    ref = np.asarray(Image.fromarray(full).resize(small.array.shape[1::-1], Image.BILINEAR), np.float32)
    assert np.abs(ref - small.array).mean() < 8


def test_decompression_bomb_is_refused(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 MP in a few kB
    assert bomb.stat().st_size < 200_000
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        decode_image(bomb, max_pixels=8_000_000)


def test_truncated_jpeg_is_flagged(tmp_path):
    path = tmp_path / "t.jpg"
    photo().save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    decoded = decode_image(path)
    assert decoded.array.shape == (480, 640, 3)
    assert decoded.warning and "decoded with errors" in decoded.warning
    assert decode_image(tmp_path / "t.jpg").warning  # and again: the flag is not sticky
    photo().save(tmp_path / "ok.jpg", quality=90)
    assert decode_image(tmp_path / "ok.jpg").warning is None


@pytest.mark.slow
def test_huge_jpeg_peak_memory_stays_bounded(small_dataset, tmp_path):
    """A 12000 x 12000 JPEG through the real extract step stays under 2.5 GB peak RSS."""
    data = copy_dataset(small_dataset, tmp_path / "data")
    big = Image.fromarray(np.asarray(photo((1500, 1500)))).resize((12000, 12000), Image.BILINEAR)
    add_test_image(data, "huge0000000000001", big, quality=85)
    del big
    work = tmp_path / "work"
    probe = (
        "import resource, subprocess, sys; "
        "r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    cmd = [sys.executable, "-c", probe, sys.executable, "-m", "landmark_retrieval", "-q", "extract",
           "--data", str(data), "--work", str(work), *SETTINGS]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    peak_mb = int(done.stdout.strip().splitlines()[-1]) / 1024
    assert peak_mb < 2500, f"peak RSS {peak_mb:.0f} MB"
    feats = FeatureStore(work / "features" / "test").local("huge0000000000001")
    assert feats.image_size == (12000, 12000) and len(feats) > 100
    assert feats.keypoints.min() >= -0.5 and feats.keypoints.max() <= 12000
    assert feats.keypoints.max() > 6000  # original pixels, not the reduced image's


# --------------------------------------------------------------------------------------------
# Bad images in a real run
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_run(small_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    data = copy_dataset(small_dataset, root / "data")
    add_test_image(data, "tiny000000000001", Image.new("RGB", (1, 1), (120, 30, 200)))
    add_test_image(data, "flat000000000001", Image.new("RGB", (640, 480), (90, 90, 90)))
    cut = add_test_image(data, "trunc00000000001", photo(), quality=90)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 3 // 4])
    bomb = data / "test" / "x" / "bomb000000000001.png"
    Image.new("1", (20000, 20000)).save(bomb)
    work, out = root / "work", root / "submission.csv"
    assert cli.main(["-q", "run", "--data", str(data), "--work", str(work), "--out", str(out), *SETTINGS]) == 0
    return work, out


def test_blank_images_get_an_empty_prediction_and_a_failure_line(bad_run):
    work, out = bad_run
    sub = read_submission(out)
    failures = {row["id"]: row for row in read_csv(work / "failures.csv")}
    for image_id in ("tiny000000000001", "flat000000000001"):
        assert sub[image_id] is None  # not an arbitrary landmark with score 0.0
        assert "no usable global descriptor" in failures[image_id]["error"]
        assert failures[image_id]["split"] == "test"


def test_bomb_is_listed_and_truncated_image_is_used_but_listed(bad_run):
    work, out = bad_run
    sub = read_submission(out)
    failures = {row["id"]: row["error"] for row in read_csv(work / "failures.csv")}
    assert sub["bomb000000000001"] is None
    assert "ImageTooLargeError" in failures["bomb000000000001"]
    assert "decompression bomb" in failures["bomb000000000001"]
    assert "decoded with errors" in failures["trunc00000000001"]
    assert sub["trunc00000000001"] is not None  # used all the same


# --------------------------------------------------------------------------------------------
# Awkward ids round-trip through every CSV
# --------------------------------------------------------------------------------------------
WEIRD_TEST = ['a,b"c\nd0000001', 'quote"only,0002', " lead space,0003"]
WEIRD_TRAIN = 'tr,ai"n\n00000001'


@pytest.fixture(scope="module")
def weird_run(small_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("weird")
    data = copy_dataset(small_dataset, root / "data")
    tests = sorted((data / "test").rglob("*.jpg"))[:3]
    renamed = {}
    for path, new_id in zip(tests, WEIRD_TEST):
        renamed[path.stem] = new_id
        path.rename(path.with_name(f"{new_id}.jpg"))
    train = read_train_csv(data / "train.csv")
    old_train = train["id"].iloc[0]
    src = image_path(data, "train", old_train)
    dst = image_path(data, "train", WEIRD_TRAIN)
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.rename(dst)
    rows = [(WEIRD_TRAIN if i == old_train else i, lm) for i, lm in zip(train["id"], train["landmark_id"])]
    with open(data / "train.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("id", "landmark_id"), *rows])
    sol = read_csv(data / "solution.csv")
    with open(data / "solution.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "landmarks", "Usage"])
        w.writerows((renamed.get(r["id"], r["id"]), r["landmarks"], r["Usage"]) for r in sol)
    work, out = root / "work", root / "submission.csv"
    args = ["-q", "run", "--data", str(data), "--work", str(work), "--out", str(out), *SETTINGS]
    assert cli.main(args) == 0
    return data, work, out, args


def test_weird_ids_round_trip_through_submission_and_predictions(weird_run):
    data, work, out, _ = weird_run
    sub = read_submission(out)
    for image_id in WEIRD_TEST:
        assert image_id in sub and sub[image_id] is not None
    preds = {row["id"] for row in read_csv(work / "predictions.csv")}
    assert set(WEIRD_TEST) <= preds


def test_weird_ids_round_trip_through_verification_and_resume(weird_run, caplog):
    data, work, out, args = weird_run
    ver = load_verification(work / "verification.csv")
    for image_id in WEIRD_TEST:
        assert len(ver[image_id]) == 10
    assert any(WEIRD_TRAIN in cands for cands in ver.values())  # a weird train id as a candidate
    before = (work / "verification.csv").read_bytes()
    assert cli.main([a for a in args if a != "-q"]) == 0
    assert "(0 already done)" not in caplog.text and "Verifying 10 candidates of 0 test images" in caplog.text
    assert (work / "verification.csv").read_bytes() == before


# --------------------------------------------------------------------------------------------
# A broken solution.csv
# --------------------------------------------------------------------------------------------
def test_broken_solution_still_writes_the_submission(small_dataset, tmp_path, caplog):
    data = copy_dataset(small_dataset, tmp_path / "data")
    (data / "solution.csv").write_bytes(b"id,landmarks,Usage\nabc,not a number,Public\n")
    out = tmp_path / "submission.csv"
    code = cli.main(["run", "--data", str(data), "--work", str(tmp_path / "work"), "--out", str(out), *SETTINGS])
    assert code == 1  # the score failed ...
    assert len(read_submission(out)) == 16  # ... never the submission
    assert "solution.csv" in caplog.text and "could not be scored" in caplog.text
