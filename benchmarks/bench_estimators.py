"""Robust estimators of the verify step: DEGENSAC vs MAGSAC++, homography vs fundamental matrix,
and ORB vs RootSIFT local features.

For every ``verify.estimator`` x ``verify.geometry`` (:data:`landmark_retrieval.matching.geometry.ESTIMATORS`):

* **synthetic matches with known inliers** (:mod:`landmark_retrieval.testing.two_view`): a
  plane seen through a known homography, and 3-D points seen by two cameras, each with 200
  inliers (noise 0.5 / 0.3 px) and 50 % or 80 % uniform outliers; ms per estimate (median of
  repeated passes over all trials) and the precision / recall of the returned inliers against
  the truth (means over trials). On the 3-D scene a homography can only explain part of the
  inliers: its recall there says how much a planar model misses.
* **real photos** (``../shared/data/groups.csv``): every pair of images of the same group
  (true pairs) and as many seeded pairs of images of different groups or distractors (false
  pairs); local features RootSIFT and ORB (1000 strongest keypoints, images resized to at most
  1024 px), putative matches with the ``demo`` preset's settings (ratio test 0.9; RootSIFT
  closer than 1.0, ORB within ``verify.max_hamming_distance`` = 64 bits), 6 px threshold,
  2000 iterations. Measured: ms per estimate, median inliers on true and on false pairs, the
  average precision of true pairs ranked by inliers, and per local feature the extraction ms
  per image and local-descriptor bytes per image.

    python benchmarks/bench_estimators.py [--quick] [--repeats N] [--photos DIR] [--out FILE]

``--quick``: 2 groups and 3 distractors of the photos (at most 40 true pairs), 2 trials per
synthetic setting, 2 repeats (about a minute on an idle machine; indicative only).
"""
from __future__ import annotations

import os

# One BLAS / OpenCV thread: per-pair figures are for one core (as in a verify worker).
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import itertools  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, Optional, Sequence, Tuple  # noqa: E402

import numpy as np  # noqa: E402
from suite import REPO, clean_runs, machine_info, pair_ap, set_patience, write_result  # noqa: E402

COMBOS = (("degensac", "homography"), ("degensac", "fundamental"), ("magsac", "homography"),
          ("magsac", "fundamental"))
OUTLIER_SHARES = (0.5, 0.8)
LOCALS = {
    "sift": ["extract.backend=sift", "extract.max_image_size=1024", "extract.sift.max_keypoints=1000"],
    "orb": ["extract.backend=orb", "extract.max_image_size=1024", "extract.orb.max_keypoints=1000"],
}
QUICK_GROUPS = ("sacre_coeur", "oxford_graf")
QUICK_DISTRACTORS = 3
QUICK_MAX_TRUE_PAIRS = 40


def default_photos() -> Path:
    return Path(os.environ.get("LANDMARK_RETRIEVAL_SHARED_DATA", REPO.parent / "shared" / "data"))


def verify_conf(estimator: str, geometry: str, local: str = "sift"):
    from landmark_retrieval.presets import get_config

    return get_config("demo", LOCALS[local] + [f"verify.estimator={estimator}", f"verify.geometry={geometry}"]).verify


def timed_pass(calls: Sequence[Tuple[np.ndarray, np.ndarray]], vc, repeats: int) -> Tuple[float, List[Any]]:
    """Median ms per estimate over ``repeats`` clean passes over ``calls``, and the last results."""
    from landmark_retrieval.matching.geometry import estimate_geometry

    def one_pass():
        return [estimate_geometry(p0, p1, vc) for p0, p1 in calls]

    runs = clean_runs(one_pass, repeats)
    ms = statistics.median(r[0] for r in runs) * 1000 / max(1, len(calls))
    return ms, runs[-1][2]


# --------------------------------------------------------------------------------------------
# Synthetic matches
# --------------------------------------------------------------------------------------------
def bench_synthetic(trials: int, repeats: int) -> Dict[str, Any]:
    from landmark_retrieval.testing.two_view import planar_matches, two_view_matches

    out: Dict[str, Any] = {"trials": trials, "inliers": 200}
    for scene, make in (("planar", planar_matches), ("3d", two_view_matches)):
        for share in OUTLIER_SHARES:
            outliers = int(round(200 * share / (1 - share)))
            data = [make(seed=s, inliers=200, outliers=outliers) for s in range(trials)]
            calls = [(p0, p1) for p0, p1, _ in data]
            for estimator, geometry in COMBOS:
                ms, results = timed_pass(calls, verify_conf(estimator, geometry), repeats)
                precision, recall, found = [], [], 0
                for (model, mask), (_, _, truth) in zip(results, data):
                    found += model is not None
                    recall.append(float(mask[truth].mean()))
                    precision.append(float(truth[mask].mean()) if mask.any() else 0.0)
                out[f"{scene}/{share:.0%}/{estimator}/{geometry}"] = {
                    "ms": round(ms, 3), "precision": round(float(np.mean(precision)), 4),
                    "recall": round(float(np.mean(recall)), 4), "models_found": found}
    return out


# --------------------------------------------------------------------------------------------
# Real photos
# --------------------------------------------------------------------------------------------
def photo_pairs(photos: Path, quick: bool, seed: int = 0) -> Tuple[List[Path], List[Tuple[int, int, bool]]]:
    """The images of ``groups.csv`` (roles index, query, distractor) and the pairs compared:
    ``(i, j, same group)``, every same-group pair and as many seeded different-group pairs."""
    with open(photos / "groups.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["suggested_role"] in ("index", "query", "distractor")]
    if quick:
        distractors = [r for r in rows if r["suggested_role"] == "distractor"][:QUICK_DISTRACTORS]
        rows = [r for r in rows if r["group"] in QUICK_GROUPS] + distractors
    paths = [photos / r["path"] for r in rows]
    groups = [r["group"] if r["suggested_role"] != "distractor" else f"distractor-{i}" for i, r in enumerate(rows)]
    same = [(i, j, True) for i, j in itertools.combinations(range(len(rows)), 2) if groups[i] == groups[j]]
    other = [(i, j, False) for i, j in itertools.combinations(range(len(rows)), 2) if groups[i] != groups[j]]
    rng = np.random.default_rng(seed)
    if quick and len(same) > QUICK_MAX_TRUE_PAIRS:
        same = [same[k] for k in sorted(rng.choice(len(same), QUICK_MAX_TRUE_PAIRS, replace=False))]
    picked = rng.choice(len(other), min(len(same), len(other)), replace=False) if other else []
    return paths, same + [other[k] for k in sorted(picked)]


def extract_all(local: str, paths: Sequence[Path]) -> Tuple[List[Any], Dict[str, float]]:
    """Features of every image with one local backend, ms per image (median) and bytes per image."""
    from landmark_retrieval.backends.registry import make_backend
    from landmark_retrieval.io.images import read_image
    from landmark_retrieval.presets import get_config

    backend = make_backend(get_config("demo", LOCALS[local]).extract)
    feats, times = [], []
    for path in paths:
        image = read_image(path, max_pixels=8_000_000)
        t0 = time.perf_counter()
        feats.append(backend.extract(image, global_=False))
        times.append(time.perf_counter() - t0)
    return feats, {"extract_ms_per_image": round(1000 * statistics.median(times), 2),
                   "descriptor_bytes_per_image": round(float(np.mean([f.descriptors.nbytes for f in feats])), 1),
                   "keypoints_per_image": round(float(np.mean([len(f) for f in feats])), 1)}


def bench_real(photos: Path, quick: bool, repeats: int) -> Dict[str, Any]:
    from landmark_retrieval.matching.pairs import match_descriptors

    paths, pairs = photo_pairs(photos, quick)
    positive = [p for _, _, p in pairs]
    out: Dict[str, Any] = {"images": len(paths), "pairs": len(pairs), "true_pairs": int(sum(positive))}
    for local in LOCALS:
        feats, extraction = extract_all(local, paths)
        res: Dict[str, Any] = {"extraction": extraction}
        vc0 = verify_conf("degensac", "homography", local)
        calls, putatives = [], []
        for i, j, _ in pairs:
            a, b = feats[i], feats[j]
            m = match_descriptors(a.descriptors, b.descriptors, vc0.max_descriptor_distance, vc0.ratio_test,
                                  vc0.mutual, vc0.max_matches, vc0.max_hamming_distance)
            calls.append((a.keypoints[m[:, 0]], b.keypoints[m[:, 1]]))
            putatives.append(len(m))
        res["putatives_median_true"] = float(np.median([n for n, p in zip(putatives, positive) if p]))
        res["putatives_median_false"] = float(np.median([n for n, p in zip(putatives, positive) if not p]))
        for estimator, geometry in COMBOS:
            ms, results = timed_pass(calls, verify_conf(estimator, geometry, local), repeats)
            inliers = [int(mask.sum()) for _, mask in results]
            true_in = [n for n, p in zip(inliers, positive) if p]
            false_in = [n for n, p in zip(inliers, positive) if not p]
            res[f"{estimator}/{geometry}"] = {
                "ms": round(ms, 3), "pair_ap": round(pair_ap(inliers, positive), 4),
                "inliers_median_true": float(np.median(true_in)), "inliers_median_false": float(np.median(false_in)),
                "inliers_p95_false": float(np.percentile(false_in, 95))}
        out[local] = res
    return out


# --------------------------------------------------------------------------------------------
def summary_rows(figures: Dict[str, Any]) -> List[Tuple[str, str]]:
    rows: List[Tuple[str, str]] = []
    syn = figures["synthetic"]
    for scene, label in (("planar", "plane (true H)"), ("3d", "3-D scene (true F)")):
        for estimator, geometry in COMBOS:
            cells = []
            for share in OUTLIER_SHARES:
                r = syn[f"{scene}/{share:.0%}/{estimator}/{geometry}"]
                cells.append(f"{share:.0%}: {r['ms']:.2f} ms, {r['precision']:.3f} / {r['recall']:.3f}")
            rows.append((f"synthetic {label}, `{estimator}` `{geometry}`: ms, inlier precision / recall at "
                         f"{' and '.join(f'{s:.0%}' for s in OUTLIER_SHARES)} outliers", "; ".join(cells)))
    real = figures["real_photos"]
    if "skipped" in real:
        rows.append(("real photos", f"skipped: {real['skipped']}"))
        return rows
    for local, label in (("sift", "RootSIFT"), ("orb", "ORB")):
        r = real[local]
        e = r["extraction"]
        rows.append((f"real photos, {label}: extraction per image; local descriptor bytes per image",
                     f"{e['extract_ms_per_image']:.0f} ms; {e['descriptor_bytes_per_image'] / 1024:.0f} KiB"))
        for estimator, geometry in COMBOS:
            c = r[f"{estimator}/{geometry}"]
            rows.append((f"real photos ({real['true_pairs']} true, {real['pairs'] - real['true_pairs']} false pairs), "
                         f"{label}, `{estimator}` `{geometry}`: ms per pair; AP of true pairs by inliers; median "
                         "inliers true / false",
                         f"{c['ms']:.2f} ms; {c['pair_ap']:.3f}; {c['inliers_median_true']:.0f} / "
                         f"{c['inliers_median_false']:.0f}"))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer photos and trials, 2 repeats")
    parser.add_argument("--repeats", type=int, help="timing repeats (default 3, --quick 2)")
    parser.add_argument("--photos", type=Path, default=default_photos(), help="folder with groups.csv")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/estimators.json)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)
    set_patience(10 if args.quick else 900)
    started = machine_info()
    import cv2

    cv2.setNumThreads(1)
    from landmark_retrieval.io.progress import set_progress

    set_progress(False)
    logging.getLogger("landmark_retrieval").setLevel(logging.ERROR)
    figures: Dict[str, Any] = {"repeats": repeats, "synthetic": bench_synthetic(2 if args.quick else 20, repeats)}
    if (args.photos / "groups.csv").is_file():
        figures["real_photos"] = bench_real(args.photos, args.quick, repeats)
    else:
        figures["real_photos"] = {"skipped": f"no groups.csv in {args.photos}"}
    real = figures["real_photos"]
    setup = ("`verify.estimator` x `verify.geometry` on synthetic matches with known inliers (200 inliers, "
             f"{figures['synthetic']['trials']} trials per setting) and "
             + (f"on real photos ({real['images']} images of `../shared/data`, every same-group pair and as many "
                "different-group pairs; RootSIFT and ORB, 1000 keypoints, <= 1024 px, `demo` matching)"
                if "skipped" not in real else "real photos skipped")
             + f"; one thread; medians of {repeats} passes")
    write_result("estimators", setup, summary_rows(figures), figures, args.quick, args.out, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
