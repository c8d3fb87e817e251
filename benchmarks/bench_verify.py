"""Time per verified pair: putative matching + DEGENSAC, with the kaggle-baseline settings.

Pairs come from the demo photographs (two synthetic views of each), with 1000 RootSIFT
features per image, as DELG gives at most 1000 local features. Usage:

    python benchmarks/bench_verify.py [--pairs 200] [--keypoints 1000] [--preset kaggle-baseline]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from landmark_retrieval.backends import make_backend
from landmark_retrieval.config import get_config
from landmark_retrieval.demo import LANDMARKS, load_photo, random_view
from landmark_retrieval.verify import estimate_homography, match_descriptors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--keypoints", type=int, default=1000)
    ap.add_argument("--preset", default="kaggle-baseline")
    args = ap.parse_args()
    conf = get_config(args.preset, ["extract.backend=sift", f"extract.sift.max_keypoints={args.keypoints}"])
    backend = make_backend(conf.extract)
    rng = np.random.default_rng(0)
    feats = []
    for name, _ in LANDMARKS:
        photo = load_photo(name)
        feats.append([backend.extract(random_view(photo, rng)[0]) for _ in range(2)])
    pairs = []
    for i in range(args.pairs):
        a = feats[i % len(feats)][0]
        # half positive pairs (same photo), half negative (different photos)
        b = feats[i % len(feats)][1] if i % 2 == 0 else feats[(i + 1) % len(feats)][1]
        pairs.append((a, b))
    t_match = t_ransac = 0.0
    inliers = []
    for a, b in pairs:
        t0 = time.perf_counter()
        m = match_descriptors(a.descriptors, b.descriptors, conf.verify.max_descriptor_distance,
                              conf.verify.ratio_test, conf.verify.mutual)
        t1 = time.perf_counter()
        _, mask = estimate_homography(a.keypoints[m[:, 0]], b.keypoints[m[:, 1]], conf.verify)
        t2 = time.perf_counter()
        t_match += t1 - t0
        t_ransac += t2 - t1
        inliers.append(int(mask.sum()))
    n = len(pairs)
    print(f"preset {args.preset}, {args.keypoints} keypoints per image, {n} pairs (half positive)")
    print(f"  matching : {1000 * t_match / n:6.2f} ms/pair")
    print(f"  DEGENSAC : {1000 * t_ransac / n:6.2f} ms/pair")
    print(f"  total    : {1000 * (t_match + t_ransac) / n:6.2f} ms/pair (one process)")
    print(f"  inliers  : positives median {np.median(inliers[0::2]):.0f}, "
          f"negatives median {np.median(inliers[1::2]):.0f}")


if __name__ == "__main__":
    main()
