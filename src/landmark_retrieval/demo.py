"""The embedded demo: a small GLR-layout dataset built offline from photographs that installed
packages ship (scikit-image's ``skimage/data`` and matplotlib's sample data), then the whole
pipeline with the classical backend.

Every "landmark" is one photograph; its train and test images are different synthetic views
of it (random homography, rotation, scale, crop, lighting, noise, JPEG quality). The real
right-hand view of the Middlebury motorcycle stereo pair is an extra test image of the
motorcycle landmark. Other photographs give non-landmark test images (no ground truth), which
a good pipeline ranks low, and train-only landmarks that no test image shows. Everything is
seeded: the dataset is identical on every machine.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image

from .io.dataset import image_path, load_dataset
from .pipeline import run
from .presets import get_config
from .visualize import pick_pair, show_pair
from .viz import save_figure

logger = logging.getLogger("landmark_retrieval")

DEMO_VERSION = 2

#: (name, landmark id) of the photographs used as landmarks
LANDMARKS: Tuple[Tuple[str, int], ...] = (
    ("astronaut", 1001),
    ("chelsea", 1002),
    ("coffee", 1003),
    ("rocket", 1004),
    ("motorcycle_left", 1005),
    ("camera", 1006),
    ("coins", 1007),
    ("hubble_deep_field", 1008),
    ("grace_hopper", 1009),
)
#: photographs that are landmarks with train images only (never in the test set)
CONFUSERS: Tuple[Tuple[str, int], ...] = (("brick", 2001), ("grass", 2002), ("clock_motion", 2003), ("text", 2004))
#: photographs used as non-landmark test images
DISTRACTORS: Tuple[str, ...] = ("retina", "ihc", "moon", "cell", "page", "gravel")


def _photo_files() -> Dict[str, Path]:
    import matplotlib
    import skimage

    sk = Path(skimage.__file__).parent / "data"
    files = {p.stem: p for p in sk.iterdir() if p.suffix in (".png", ".jpg")}
    files["grace_hopper"] = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return files


def load_photo(name: str, max_side: int = 640) -> np.ndarray:
    """One of the shipped photographs as RGB uint8, shrunk to ``max_side``."""
    files = _photo_files()
    if name not in files or not files[name].is_file():
        folders = sorted({p.parent for p in files.values()})
        raise FileNotFoundError(f"Demo photograph {name!r} not found (looked in {folders})")
    with Image.open(files[name]) as im:
        im = im.convert("RGB")
        s = min(1.0, max_side / max(im.size))
        if s < 1.0:
            im = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
        return np.asarray(im)


def random_view(photo: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
                partial: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """A synthetic view of ``photo``.

    Args:
        strength: scales the rotation and perspective distortion.
        partial: probability that the view shows only part of the photo (45-80 % per side).

    Returns:
        ``(view, H)``: the RGB uint8 view and the 3x3 homography mapping photo (x, y) pixels
        to view pixels.
    """
    h, w = photo.shape[:2]
    src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    scale = rng.uniform(0.55, 1.05)
    angle = np.deg2rad(rng.uniform(-30, 30) * strength)
    c, s = np.cos(angle), np.sin(angle)
    centre = np.float32([w / 2, h / 2])
    dst = (src - centre) @ np.float32([[c, s], [-s, c]]) * scale
    dst += rng.uniform(-0.12, 0.12, size=(4, 2)).astype(np.float32) * strength * scale * np.float32([w, h])
    lo, hi = dst.min(0), dst.max(0)
    size = hi - lo
    if rng.uniform() < partial:
        keep = rng.uniform(0.45, 0.8, 2)
        crop_lo = lo + rng.uniform(0.0, 1.0, 2) * (1.0 - keep) * size
        crop_hi = crop_lo + keep * size
    else:
        crop_lo = lo + rng.uniform(0.0, 0.15, 2) * size
        crop_hi = hi - rng.uniform(0.0, 0.15, 2) * size
    dst -= crop_lo
    out_w, out_h = (int(v) for v in np.maximum(crop_hi - crop_lo, 32))
    H = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    view = cv2.warpPerspective(photo, H, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    # lighting: gain, bias, gamma, colour cast, sensor noise, sometimes blur
    x = view.astype(np.float32) / 255.0
    x = np.clip(x * rng.uniform(0.75, 1.25) + rng.uniform(-0.08, 0.08), 0, 1) ** rng.uniform(0.7, 1.4)
    x = x * rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    x = x + rng.normal(0, 0.01, size=x.shape).astype(np.float32)
    view = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.uniform() < 0.3:
        view = cv2.GaussianBlur(view, (0, 0), rng.uniform(0.5, 1.2))
    return view, H


def _jpeg(image: np.ndarray, path: Path, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    path.write_bytes(buf.getvalue())


def _image_id(*parts: object) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()[:16]


@dataclass
class DemoSpec:
    """Size of the demo dataset."""

    train_views: int = 3
    test_views: int = 3
    distractor_views: int = 2
    test_strength: float = 1.3  # test views are harder than train views
    test_partial: float = 0.5  # share of test views that show part of the landmark
    seed: int = 0
    # "retrieval" (GLR2021 layout): the train views go to index/ (no labels), solution.csv lists
    # the relevant index images, and label_views extra labelled views per landmark form train/
    task: str = "recognition"
    label_views: int = 1


def build_demo_dataset(root: Union[str, Path] = "data/demo", spec: Optional[DemoSpec] = None,
                       force: bool = False) -> Path:
    """Write the demo dataset in GLR layout (train.csv, solution.csv, train/, test/).

    Skips the work when ``root`` already holds the same version and spec; replaces an older demo
    dataset; never touches a folder that is not a demo dataset (FileExistsError).
    """
    root = Path(root)
    spec = spec or DemoSpec()
    stamp = {"version": DEMO_VERSION, **spec.__dict__}
    marker = root / "demo.json"
    if not force and marker.is_file() and json.loads(marker.read_text()) == stamp:
        logger.info("Demo dataset already in %s", root)
        return root
    if root.exists():
        if not marker.is_file() and (not root.is_dir() or any(root.iterdir())):
            raise FileExistsError(
                f"{root} exists and is not a demo dataset (no demo.json): refusing to replace it. "
                "Give the demo an empty or new folder (--data), or run on this dataset with `run --data`.")
        shutil.rmtree(root)
    rng = np.random.default_rng(spec.seed)
    train_rows: List[Tuple[str, int]] = []
    solution_rows: List[Tuple[str, str, str]] = []

    def add_test(image_id: str, landmark: str, view: np.ndarray) -> None:
        usage = "Public" if len(solution_rows) % 2 == 0 else "Private"
        _jpeg(view, image_path(root, "test", image_id), int(rng.integers(50, 95)))
        solution_rows.append((image_id, landmark, usage))

    retrieval = spec.task == "retrieval"
    index_of: Dict[int, List[str]] = {}

    def add_train(name: str, landmark_id: int, photo: np.ndarray) -> None:
        for v in range(spec.train_views):
            view, _ = random_view(photo, rng)
            if retrieval:
                image_id = _image_id("index", name, v)
                _jpeg(view, image_path(root, "index", image_id), int(rng.integers(60, 95)))
                index_of.setdefault(landmark_id, []).append(image_id)
            else:
                image_id = _image_id("train", name, v)
                _jpeg(view, image_path(root, "train", image_id), int(rng.integers(60, 95)))
                train_rows.append((image_id, landmark_id))
        for v in range(spec.label_views if retrieval else 0):  # labelled images for label-aware ranking
            view, _ = random_view(photo, rng)
            image_id = _image_id("label", name, v)
            _jpeg(view, image_path(root, "train", image_id), int(rng.integers(60, 95)))
            train_rows.append((image_id, landmark_id))

    for name, landmark_id in LANDMARKS:
        photo = load_photo(name)
        add_train(name, landmark_id, photo)
        for v in range(spec.test_views):
            view, _ = random_view(photo, rng, spec.test_strength, spec.test_partial)
            add_test(_image_id("test", name, v), str(landmark_id), view)
        if name == "motorcycle_left":  # a real second viewpoint of the same scene
            add_test(_image_id("test", "motorcycle_right"), str(landmark_id), load_photo("motorcycle_right"))
    for name, landmark_id in CONFUSERS:
        add_train(name, landmark_id, load_photo(name))
    for name in DISTRACTORS:
        photo = load_photo(name)
        for v in range(spec.distractor_views):
            view, _ = random_view(photo, rng, spec.test_strength, spec.test_partial)
            add_test(_image_id("distractor", name, v), "", view)
    if train_rows or not retrieval:
        with open(root / "train.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "landmark_id"])
            w.writerows(train_rows)
    with open(root / "solution.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        if retrieval:
            w.writerow(["id", "images", "Usage"])
            w.writerows((i, " ".join(index_of.get(int(lm), [])) if lm else "", u) for i, lm, u in solution_rows)
        else:
            w.writerow(["id", "landmarks", "Usage"])
            w.writerows(solution_rows)
    marker.write_text(json.dumps(stamp))
    logger.info("Demo dataset (%s): %d %s and %d test images in %s", spec.task,
                sum(map(len, index_of.values())) if retrieval else len(train_rows),
                "index" if retrieval else "train", len(solution_rows), root)
    return root


def run_demo(data: Union[str, Path] = "data/demo", work: Union[str, Path] = "work/demo",
             out: Union[str, Path] = "submission/submission.csv", preset: str = "demo",
             overrides: Optional[Sequence[str]] = None, task: str = "recognition"):
    """Build the demo dataset (if needed), run the pipeline, save a verified-match picture.

    Returns:
        The :class:`landmark_retrieval.pipeline.RunResult`; its ``figure`` is the picture's
        path when a correct verified pair was found.
    """
    conf = get_config(preset, overrides)
    dataset = load_dataset(build_demo_dataset(data, DemoSpec(task=task)))
    # the demo's work directory is the demo's own: features made with other settings (another
    # --set, or an earlier version) are computed again instead of stopping the demo
    result = run(conf, dataset, work, out, overwrite=True)
    query, db_id = pick_pair(dataset, work, conf)
    if db_id:
        picture = Path(out).parent / ("demo_match.png" if task == "recognition" else "demo-retrieval_match.png")
        result.figure = save_figure(show_pair(dataset, work, query, db_id, conf), picture)
        logger.info("Saved the verified matches of test %s and %s image %s to %s", query, dataset.db_split, db_id,
                    result.figure)
    return result
