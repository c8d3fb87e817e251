#!/usr/bin/env python
"""End to end: the GLR2020 host-baseline flow against this package's ``run``, same DELG model.

Both flows use the realistic-cost DELG model (ResNet-50-sized, random weights, official TF1
``prune`` interface: ``delg_models.realistic_delg_model``) on the same GLR-layout dataset of
JPEGs: random views (:func:`landmark_retrieval.demo.random_view`) of the real photographs of
``../shared/data/groups.csv`` (their landmark groups are the labels; a fifth of the test images are
views of distractor photos), or of the demo's packaged photographs when those are absent,
resized so that their longest side is ``--size`` pixels.

* **host flow**, written from its description (``shared/reference/delg-reference.md`` §3.2):
  global descriptors of every train and test image (``prune`` with the global fetch only; L2 per
  scale, sum, L2) into ``np.empty((n, 2048))`` float64 matrices; per test image ``scipy`` ``cdist``
  (cosine) against the whole train matrix, ``argpartition`` of the 10 nearest; then for each test
  image local features of the test image and of **each** of its 10 candidates re-extracted
  (``prune`` with the local fetches, no caching), ``cKDTree`` matching at distance 0.9,
  ``pydegensac.findHomography(4.0 px, 0.99, 1000 iterations)`` (no seed), total score
  ``min(inliers, 70) / 70 + cosine``, label = the largest score sum over the top 5; CSV written.
* **package flow**: ``landmark_retrieval.pipeline.run`` with the ``kaggle-baseline`` preset
  (``extract.train_local=candidates``) and with ``extract.train_local=all``, each from an empty
  work directory (the model loaded once and shared; scoring excluded from the totals).

What is run and what is extrapolated: both package runs and the host flow's global stage (every
train and test image) and kNN run in full. The host flow's re-ranking stage (11 model calls per
test image) runs for ``--host-queries`` test images (a seeded random sample) and its time is
scaled linearly to all test images (each query is independent: same work per query). The
``projected`` figures replace each flow's measured model-call time by its model calls (counted
by kind: global head only, local only, both) times the cost per call measured on
``--project-size`` px images; their other time (decoding, matching, RANSAC, I/O) stays as
measured on the small images, so the projections understate it (more local features per image).

Writes ``benchmarks/results/host_flow.json``.

    python benchmarks/bench_host_flow.py [--quick] [--test 300] [--train 1500] [--size 112]
        [--host-queries 20] [--project-size 512]
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from operator import itemgetter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from suite import (  # noqa: E402
    CONTENTION,
    MAX_OTHER_SHARE,
    REPO,
    cpu_snapshot,
    machine_info,
    other_cpu_share,
    set_patience,
    wait_for_idle,
    write_result,
)

# The host baseline's constants (delg-reference.md §3.2)
NUM_TO_RERANK, TOP_K, MAX_INLIER_SCORE = 10, 5, 70
MAX_REPROJECTION_ERROR, MAX_RANSAC_ITERATIONS, HOMOGRAPHY_CONFIDENCE = 4.0, 1000, 0.99
MAX_DISTANCE = 0.9
SCALES, SCORE_THRESHOLD, MAX_FEATURES, GLOBAL_DIM = [0.70710677, 1.0, 1.4142135], 175.0, 1000, 2048


# ---------------------------------------------------------------------------------------------
# Dataset


def default_photos() -> Path:
    return Path(os.environ.get("LANDMARK_RETRIEVAL_SHARED_DATA") or REPO.parent / "shared" / "data")


def load_photos(photos: Path, max_side: int) -> Tuple[Dict[str, List[np.ndarray]], List[np.ndarray], str]:
    """``({group: [RGB uint8]}, [distractor RGB uint8], source)``, each shrunk to ``max_side``."""
    def load(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            im = im.convert("RGB")
            s = min(1.0, max_side / max(im.size))
            if s < 1.0:
                im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
            return np.asarray(im)

    groups: Dict[str, List[np.ndarray]] = defaultdict(list)
    distractors: List[np.ndarray] = []
    if (photos / "groups.csv").is_file():
        with open(photos / "groups.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                path = photos / row["path"]
                if not path.is_file():
                    continue
                if row["suggested_role"] in ("index", "query"):
                    groups[row["group"]].append(load(path))
                elif row["suggested_role"] == "distractor":
                    distractors.append(load(path))
        if groups and distractors:
            return dict(groups), distractors, f"{len(groups)} groups of real photographs in {photos}"
    from landmark_retrieval.demo import DISTRACTORS, LANDMARKS, load_photo

    groups = {name: [load_photo(name, max_side)] for name, _ in LANDMARKS}
    return groups, [load_photo(n, max_side) for n in DISTRACTORS], "the demo's packaged photographs"


def build_dataset(root: Path, photos: Path, n_train: int, n_test: int, size: int, seed: int) -> Dict[str, Any]:
    """GLR layout under ``root``: ``n_train`` train and ``n_test`` test JPEGs, longest side
    ``size``; train.csv and solution.csv. Deterministic for a seed."""
    from landmark_retrieval.demo import random_view
    from landmark_retrieval.io.dataset import image_path

    rng = np.random.default_rng(seed)
    groups, distractors, source = load_photos(photos, max_side=max(2 * size, 256))
    names = sorted(groups)
    label = {g: i + 1 for i, g in enumerate(names)}

    def save(view: np.ndarray, split: str, image_id: str) -> None:
        im = Image.fromarray(view)
        s = size / max(im.size)
        im = im.resize((max(16, round(im.width * s)), max(16, round(im.height * s))), Image.BILINEAR)
        path = image_path(root, split, image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path, quality=int(rng.integers(70, 95)))

    train_rows, solution_rows = [], []
    for i in range(n_train):
        g = names[i % len(names)]
        photo = groups[g][int(rng.integers(len(groups[g])))]
        image_id = f"{int(rng.integers(2**63)):016x}"
        save(random_view(photo, rng)[0], "train", image_id)
        train_rows.append((image_id, label[g]))
    for i in range(n_test):
        image_id = f"{int(rng.integers(2**63)):016x}"
        usage = "Public" if i % 2 == 0 else "Private"
        if i % 5 == 4:
            save(random_view(distractors[int(rng.integers(len(distractors)))], rng, 1.3, 0.5)[0], "test", image_id)
            solution_rows.append((image_id, "", usage))
        else:
            g = names[int(rng.integers(len(names)))]
            photo = groups[g][int(rng.integers(len(groups[g])))]
            save(random_view(photo, rng, 1.3, 0.5)[0], "test", image_id)
            solution_rows.append((image_id, str(label[g]), usage))
    with open(root / "train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("id", "landmark_id"), *train_rows])
    with open(root / "solution.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("id", "landmarks", "Usage"), *solution_rows])
    return {"source": source, "landmarks": len(names), "train": n_train, "test": n_test, "size": size}


# ---------------------------------------------------------------------------------------------
# The host-baseline flow (from its description; timed by stage)


class Stages:
    """Seconds and counts by stage name."""

    def __init__(self):
        self.seconds: Dict[str, float] = defaultdict(float)
        self.counts: Counter = Counter()

    def add(self, name: str, t0: float, n: int = 1) -> float:
        now = time.perf_counter()
        self.seconds[name] += now - t0
        self.counts[name] += n
        return now


class HostFlow:
    """The GLR2020 host baseline's recognition flow over a GLR-layout folder."""

    def __init__(self, model_dir: Path):
        import tensorflow as tf

        self.tf = tf
        self.model = tf.saved_model.load(str(model_dir))
        feeds = ["input_image:0", "input_scales:0", "input_abs_thres:0"]
        self.global_fn = self.model.prune(feeds, ["global_descriptors:0"])
        self.local_fn = self.model.prune(feeds + ["input_max_feature_num:0"], ["boxes:0", "features:0"])
        self.scales = tf.convert_to_tensor(SCALES)
        self.threshold = tf.constant(SCORE_THRESHOLD)
        self.num = tf.constant(MAX_FEATURES)
        self.stages = Stages()

    def warm_up(self, path: Path) -> None:
        image = self.load(path)
        self.global_fn(image, self.scales, self.threshold)
        self.local_fn(image, self.scales, self.threshold, self.num)

    def load(self, path: Path):
        return self.tf.convert_to_tensor(np.array(Image.open(path).convert("RGB")))

    def global_features(self, paths: Sequence[Path]) -> np.ndarray:
        """(n, 2048) float64, as the baseline allocates it."""
        st = self.stages
        out = np.empty((len(paths), GLOBAL_DIM))
        for i, path in enumerate(paths):
            t0 = time.perf_counter()
            image = self.load(path)
            t0 = st.add("global: decode", t0)
            raw = self.global_fn(image, self.scales, self.threshold)[0]
            t0 = st.add("global: model", t0)
            raw = self.tf.nn.l2_normalize(raw, axis=1)
            out[i] = self.tf.nn.l2_normalize(self.tf.reduce_sum(raw, axis=0), axis=0).numpy()
            st.add("global: post-processing", t0)
        return out

    def local_features(self, path: Path) -> Tuple[np.ndarray, np.ndarray]:
        st = self.stages
        t0 = time.perf_counter()
        image = self.load(path)
        t0 = st.add("re-rank: decode", t0)
        boxes, features = self.local_fn(image, self.scales, self.threshold, self.num)
        t0 = st.add("re-rank: model (local)", t0)
        keypoints = np.divide(np.add(boxes[:, 0:2], boxes[:, 2:4]), 2.0)
        descriptors = self.tf.nn.l2_normalize(features, axis=1).numpy()
        st.add("re-rank: post-processing", t0)
        return keypoints, descriptors

    def num_inliers(self, test_kp, test_desc, train_kp, train_desc) -> int:
        import pydegensac
        from scipy import spatial

        st = self.stages
        t0 = time.perf_counter()
        if len(train_desc) == 0:
            st.add("re-rank: matching (cKDTree)", t0)
            return 0
        _, idx = spatial.cKDTree(train_desc).query(test_desc, distance_upper_bound=MAX_DISTANCE)
        keep = idx != len(train_desc)
        test_match, train_match = test_kp[keep], train_kp[idx[keep]]
        t0 = st.add("re-rank: matching (cKDTree)", t0)
        if len(test_match) <= 4:
            return 0
        try:
            _, mask = pydegensac.findHomography(test_match, train_match, MAX_REPROJECTION_ERROR,
                                                HOMOGRAPHY_CONFIDENCE, MAX_RANSAC_ITERATIONS)
        except np.linalg.LinAlgError:
            mask = []
        st.add("re-rank: DEGENSAC", t0)
        return int(np.asarray(mask, bool).sum())

    def run(self, root: Path, out_csv: Path, rerank_queries: Optional[Sequence[int]]) -> Dict[str, Any]:
        """The flow; re-ranking only for the test rows ``rerank_queries`` (None = all)."""
        from scipy import spatial

        st = self.stages
        t_start = time.perf_counter()
        t0 = t_start
        train_paths = sorted((root / "train").rglob("*.jpg"))
        test_paths = sorted((root / "test").rglob("*.jpg"))
        with open(root / "train.csv", newline="") as fh:
            labels = {row["id"]: int(row["landmark_id"]) for row in csv.DictReader(fh)}
        train_ids = [p.stem for p in train_paths]
        test_ids = [p.stem for p in test_paths]
        t0 = st.add("listing + train.csv", t0)
        t_global = time.perf_counter()
        train_emb = self.global_features(train_paths)
        test_emb = self.global_features(test_paths)
        t0 = time.perf_counter()
        global_s = t0 - t_global
        retrieved = []
        for i in range(len(test_ids)):
            d = spatial.distance.cdist(test_emb[i][None], train_emb, "cosine")[0]
            part = np.argpartition(d, NUM_TO_RERANK)[:NUM_TO_RERANK]
            nearest = sorted(zip(d[part], part), key=lambda x: x[0])
            retrieved.append([(train_ids[j], labels[train_ids[j]], 1.0 - dist) for dist, j in nearest])
        t0 = st.add("kNN (float64, cdist per row)", t0, len(test_ids))
        knn_s = st.seconds["kNN (float64, cdist per row)"]
        rows = range(len(test_ids)) if rerank_queries is None else rerank_queries
        predictions: Dict[str, Tuple[int, float]] = {}
        t_rerank = time.perf_counter()
        for i in rows:
            test_kp, test_desc = self.local_features(test_paths[i])
            scored = []
            for train_id, label, global_score in retrieved[i]:
                path = root / "train" / train_id[0] / train_id[1] / train_id[2] / f"{train_id}.jpg"
                train_kp, train_desc = self.local_features(path)
                inliers = self.num_inliers(test_kp, test_desc, train_kp, train_desc)
                scored.append((train_id, label, min(inliers, MAX_INLIER_SCORE) / MAX_INLIER_SCORE + global_score))
            scored.sort(key=itemgetter(2), reverse=True)
            t0 = time.perf_counter()
            aggregate: Dict[int, float] = defaultdict(float)
            for _, label, score in scored[:TOP_K]:
                aggregate[label] += score
            predictions[test_ids[i]] = max(aggregate.items(), key=itemgetter(1))
            st.add("re-rank: scoring + label vote", t0)
        rerank_s = time.perf_counter() - t_rerank
        t0 = time.perf_counter()
        with open(out_csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["id", "landmarks"])
            writer.writeheader()
            for image_id in test_ids:
                label_score = predictions.get(image_id)
                text = f"{label_score[0]} {label_score[1]}" if label_score else ""
                writer.writerow({"id": image_id, "landmarks": text})
        st.add("submission CSV", t0)
        return {"global_s": global_s, "knn_s": knn_s, "rerank_s": rerank_s, "reranked": len(rows),
                "test": len(test_ids), "train": len(train_ids), "total_s": time.perf_counter() - t_start,
                "predictions": predictions, "test_ids": test_ids}


# ---------------------------------------------------------------------------------------------
# The package flow


class CountingModel:
    """Wraps a DelgModel: counts calls and model seconds by kind (both heads / global / local)."""

    def __init__(self, model):
        self.model = model
        self.seconds: Dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()

    def __getattr__(self, name):
        return getattr(self.model, name)

    def reset(self) -> None:
        self.seconds, self.calls = defaultdict(float), Counter()

    def __call__(self, *args, fetch_local: bool = True, fetch_global: bool = True, **kwargs):
        kind = "both" if fetch_local and fetch_global else ("local" if fetch_local else "global")
        t0 = time.perf_counter()
        try:
            return self.model(*args, fetch_local=fetch_local, fetch_global=fetch_global, **kwargs)
        finally:
            self.seconds[kind] += time.perf_counter() - t0
            self.calls[kind] += 1


def package_flow(backend, counting: CountingModel, data: Path, work: Path, model_dir: Path,
                 train_local: str) -> Dict[str, Any]:
    from landmark_retrieval.pipeline import run
    from landmark_retrieval.presets import get_config

    conf = get_config("kaggle-baseline", [f"extract.model_path={model_dir}", f"extract.train_local={train_local}"])
    counting.reset()
    t0 = time.perf_counter()
    result = run(conf, data, work, out=work / "submission.csv", backend=backend, time_budget="none")
    total = time.perf_counter() - t0
    timings = {k: round(v, 3) for k, v in result.timings.items()}
    evaluate_s = result.timings.get("evaluate", 0.0)
    predictions = {}
    with open(result.submission, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["landmarks"]:
                label, score = row["landmarks"].split()
                predictions[row["id"]] = (int(label), float(score))
    return {"total_s": total - evaluate_s, "steps_s": timings, "evaluate_s": round(evaluate_s, 3),
            "model_s": {k: round(v, 3) for k, v in counting.seconds.items()}, "model_calls": dict(counting.calls),
            "predictions": predictions}


def per_call_cost(model, paths: Sequence[Path], size: Optional[int]) -> Dict[str, float]:
    """Median seconds of one model call by kind on these images (resized to ``size``)."""
    images = []
    for path in paths:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size:
                s = size / max(im.size)
                im = im.resize((round(im.width * s), round(im.height * s)), Image.BILINEAR)
            images.append(np.asarray(im))
    kinds = {"both": (True, True), "global": (False, True), "local": (True, False)}
    for local, global_ in kinds.values():  # warm-up (traced functions, caches)
        model(images[0], SCALES, SCORE_THRESHOLD, MAX_FEATURES, fetch_local=local, fetch_global=global_)
    times: Dict[str, List[float]] = defaultdict(list)
    for image in images:
        for kind, (local, global_) in kinds.items():
            t0 = time.perf_counter()
            model(image, SCALES, SCORE_THRESHOLD, MAX_FEATURES, fetch_local=local, fetch_global=global_)
            times[kind].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def agreement(a: Dict[str, Tuple[int, float]], b: Dict[str, Tuple[int, float]], ids) -> Optional[float]:
    ids = [i for i in ids if i in a or i in b]
    if not ids:
        return None
    return sum((a.get(i) or (None,))[0] == (b.get(i) or (None,))[0] for i in ids) / len(ids)


# ---------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 test x 60 train images, 2 host queries")
    parser.add_argument("--test", type=int, help="test images (default 300; --quick 12)")
    parser.add_argument("--train", type=int, help="train images (default 1500; --quick 60)")
    parser.add_argument("--size", type=int, help="longest image side in px (default 112; --quick 96)")
    parser.add_argument("--host-queries", type=int,
                        help="test images the host flow re-ranks, then scaled to all (default 20; --quick 2; "
                             "0 = all)")
    parser.add_argument("--project-size", type=int,
                        help="image side of the per-call model cost used for the projected figures (default 512; "
                             "--quick 256)")
    parser.add_argument("--cost-images", type=int, help="images timed for the per-call cost (default 4; --quick 1)")
    parser.add_argument("--photos", type=Path, default=None, help="folder with groups.csv (default ../shared/data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON file (default benchmarks/results/host_flow.json)")
    args = parser.parse_args(argv)
    n_test = args.test or (12 if args.quick else 300)
    n_train = args.train or (60 if args.quick else 1500)
    size = args.size or (96 if args.quick else 112)
    project_size = args.project_size or (256 if args.quick else 512)
    n_cost = args.cost_images or (1 if args.quick else 4)
    host_q = args.host_queries if args.host_queries is not None else (2 if args.quick else 20)
    host_q = n_test if host_q <= 0 else min(host_q, n_test)
    set_patience(10 if args.quick else 120)
    started = machine_info()
    logging.basicConfig(level=logging.WARNING)

    import tensorflow as tf
    from delg_models import realistic_delg_model

    from landmark_retrieval.backends.registry import make_backend
    from landmark_retrieval.io.progress import set_progress
    from landmark_retrieval.presets import get_config

    set_progress(False)
    t0 = time.perf_counter()
    model_dir = realistic_delg_model("tf1", seed=args.seed)
    print(f"model ready in {time.perf_counter() - t0:.1f} s: {model_dir}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_host_flow_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        data_info = build_dataset(tmp / "data", args.photos or default_photos(), n_train, n_test, size, args.seed)
        print(f"dataset: {n_test} test x {n_train} train JPEGs of {size} px from {data_info['source']} "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
        train_paths = sorted((tmp / "data" / "train").rglob("*.jpg"))

        conf = get_config("kaggle-baseline", [f"extract.model_path={model_dir}"])
        backend = make_backend(conf.extract)
        counting = CountingModel(backend.model)
        backend.model = counting
        cost_small = per_call_cost(counting.model, train_paths[:n_cost], None)
        cost_proj = per_call_cost(counting.model, train_paths[n_cost:2 * n_cost], project_size)
        host = HostFlow(model_dir)
        host.warm_up(train_paths[0])

        flows: Dict[str, Dict[str, Any]] = {}
        for train_local in ("all", "candidates"):
            wait_for_idle()
            print(f"package run, extract.train_local={train_local} ...", flush=True)
            snap = cpu_snapshot()
            flows[f"package_{train_local}"] = package_flow(backend, counting, tmp / "data", tmp / f"work-{train_local}",
                                                          model_dir, train_local)
            CONTENTION["runs"] += 1
            CONTENTION["contended_timings"] += (other_cpu_share(snap) or 0.0) >= MAX_OTHER_SHARE
        wait_for_idle()
        rng = np.random.default_rng(args.seed)
        queries = None if host_q >= n_test else sorted(rng.choice(n_test, host_q, replace=False).tolist())
        print(f"host flow (re-ranking {host_q} of {n_test} test images) ...", flush=True)
        snap = cpu_snapshot()
        host_run = host.run(tmp / "data", tmp / "host_submission.csv", queries)
        CONTENTION["runs"] += 1
        CONTENTION["contended_timings"] += (other_cpu_share(snap) or 0.0) >= MAX_OTHER_SHARE
        test_ids = host_run["test_ids"]

    # host: scale the re-ranking stage to every test image
    scale = n_test / host_q
    st = host.stages
    host_stages = {k: round(v * (scale if k.startswith("re-rank") else 1.0), 3) for k, v in st.seconds.items()}
    host_total = host_run["total_s"] + host_run["rerank_s"] * (scale - 1.0)
    host_calls = {"global": st.counts["global: model"], "local": round(st.counts["re-rank: model (local)"] * scale)}
    host_model_s = st.seconds["global: model"] + st.seconds["re-rank: model (local)"] * scale

    def projected(total: float, model_s: float, calls: Dict[str, int]) -> float:
        return total - model_s + sum(n * cost_proj[k] for k, n in calls.items())

    figures: Dict[str, Any] = {
        "dataset": data_info, "host_queries_reranked": host_q, "host_rerank_scaled_by": round(scale, 3),
        "tensorflow": tf.__version__,
        "model_s_per_call": {f"{size}px": {k: round(v, 4) for k, v in cost_small.items()},
                             f"{project_size}px": {k: round(v, 4) for k, v in cost_proj.items()}},
        "host": {"total_s": round(host_total, 2), "measured_s": round(host_run["total_s"], 2),
                 "stages_s": host_stages, "model_calls": host_calls, "model_s": round(host_model_s, 2),
                 "projected_total_s": round(projected(host_total, host_model_s, host_calls), 1)},
    }
    for name, flow in flows.items():
        model_s = sum(flow["model_s"].values())
        figures[name] = {k: v for k, v in flow.items() if k != "predictions"}
        figures[name]["total_s"] = round(flow["total_s"], 2)
        figures[name]["projected_total_s"] = round(projected(flow["total_s"], model_s, flow["model_calls"]), 1)
        figures[name]["ratio_host_over_package"] = round(host_total / flow["total_s"], 2)
        figures[name]["projected_ratio_host_over_package"] = round(
            figures["host"]["projected_total_s"] / figures[name]["projected_total_s"], 2)
        reranked = [test_ids[i] for i in (queries if queries is not None else range(len(test_ids)))]
        figures[name]["same_label_as_host_on_reranked"] = agreement(flow["predictions"], host_run["predictions"],
                                                                     reranked)
    pa, pc = figures["package_all"], figures["package_candidates"]
    extrapolated = (f"host re-ranking run on {host_q} of {n_test} test images and scaled x{scale:.1f}"
                    if host_q < n_test else "nothing extrapolated")
    rows = [
        (f"end to end, {n_test} test x {n_train} train JPEGs of {size} px, ResNet-50-sized DELG: host-baseline flow; "
         "`run` kaggle-baseline with train_local=all; =candidates",
         f"{host_total:.0f} s; {pa['total_s']:.0f} s ({pa['ratio_host_over_package']:.1f}x faster); "
         f"{pc['total_s']:.0f} s ({pc['ratio_host_over_package']:.1f}x faster) ({extrapolated})"),
        ("model calls: host (global; local); all (both heads); candidates (global; both; local)",
         f"{host_calls['global']}; {host_calls['local']} | {pa['model_calls'].get('both', 0)} | "
         f"{pc['model_calls'].get('global', 0)}; {pc['model_calls'].get('both', 0)}; "
         f"{pc['model_calls'].get('local', 0)}"),
        (f"projected to {project_size} px images (model calls x measured cost per call at that size, "
         "other time as measured): host; all; candidates",
         f"{figures['host']['projected_total_s'] / 60:.0f} min; {pa['projected_total_s'] / 60:.0f} min "
         f"({pa['projected_ratio_host_over_package']:.1f}x); {pc['projected_total_s'] / 60:.0f} min "
         f"({pc['projected_ratio_host_over_package']:.1f}x)"),
    ]
    setup = (f"the GLR2020 host-baseline flow written from its description (float64 global matrix, cdist per test "
             f"image, local features re-extracted for each of the 10 candidates, DEGENSAC 4 px / 1000 iterations) "
             f"against `run` (kaggle-baseline preset), same ResNet-50-sized random-weight DELG model (TF1 prune), "
             f"random views of real photographs resized to {size} px; {extrapolated}; stage times in the JSON")
    write_result("host_flow", setup, rows, figures, args.quick, args.out, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
