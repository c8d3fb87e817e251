"""Learned projection of global descriptors (``retrieve.projection``): GAP and mAP@100 without
and with a siamese or SimCLR-trained projection (linear and 2-layer MLP), global-only.

Datasets (classical backend, ``demo`` preset, features extracted once per dataset):

* ``val/s<seed>``: validation splits of the real-photo set's *train part* (``../shared/data/
  groups.csv`` in GLR layout, as in ``bench_quality.py``) made by ``landmark_retrieval.split``
  (30 % of the kept landmarks' images become test images, 30 % of the landmarks become
  distractors), never looking at its test labels; the headline figures are their mean;
* ``groups``: the real-photo set itself (63 train images of 24 landmarks, 72 test images);
* ``demo``: the embedded synthetic demo (``landmark_retrieval.demo``).

``--quick`` keeps one validation split and three variants (10 epochs, one SimCLR view).

The projection changes the global ranking only, so the figures are global-only (retrieve,
predict without verification, evaluate). Training time is the retrieve step's time minus the
baseline's (TensorFlow's import excluded: a warm-up training runs first).

    python benchmarks/bench_projection.py [--quick] [--photos ../shared/data] [--seeds 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from suite import REPO, machine_info, set_patience, write_result

#: retrieve.projection settings of every variant (over the defaults)
VARIANTS: Dict[str, Dict[str, Any]] = {
    "none": {},
    "siamese": {"method": "siamese"},
    "siamese, random init": {"method": "siamese", "init": "random"},
    "siamese, MLP 512": {"method": "siamese", "hidden_dim": 512},
    "simclr": {"method": "simclr"},
    "simclr, random init": {"method": "simclr", "init": "random"},
    "simclr, MLP 512": {"method": "simclr", "hidden_dim": 512},
}
#: --quick: these variants, 10 epochs, one view per image, one validation split
QUICK = ("none", "siamese", "simclr")
METRICS = ("global_gap", "global_map100")


def evaluate_dataset(data: Path, work: Path, variants: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Global-only scores and retrieve-step seconds of every variant on one dataset."""
    from landmark_retrieval.evaluate import evaluate_run
    from landmark_retrieval.extract import extract
    from landmark_retrieval.io.dataset import load_dataset
    from landmark_retrieval.predict import predict
    from landmark_retrieval.presets import get_config
    from landmark_retrieval.retrieve import retrieve

    dataset = load_dataset(data)
    out: Dict[str, Dict[str, float]] = {}
    for name, projection in variants.items():
        conf = get_config("demo", {"retrieve": {"k": 100, "projection": projection}, "verify": {"enabled": False}})
        extract(conf, dataset, work)  # once: the projection does not change the features
        t0 = time.perf_counter()
        retrieve(conf, dataset, work)
        seconds = time.perf_counter() - t0
        predict(conf, dataset, work)
        m = evaluate_run(conf, dataset, work)
        out[name] = {"gap": m["global_gap"], "map100": m["global_map100"], "retrieve_s": seconds}
    return out


def mean(results: List[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    return {v: {k: sum(r[v][k] for r in results) / len(results) for k in results[0][v]} for v in results[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--seeds", type=int, default=5, help="validation splits")
    parser.add_argument("--quick", action="store_true",
                        help="1 validation split, 3 variants, 10 epochs, 1 simclr view (minutes, indicative)")
    parser.add_argument("--json", type=Path, help="write the result here instead of benchmarks/results/")
    args = parser.parse_args()
    started = machine_info()
    if args.quick:
        set_patience(5)
    if not (args.photos / "groups.csv").is_file():
        print(json.dumps({"skipped": f"no groups.csv in {args.photos}"}))
        return 0
    import logging

    from landmark_retrieval.io.progress import set_progress
    from landmark_retrieval.split import make_validation_split
    from landmark_retrieval.testing.groups import build_glr_from_groups

    set_progress(False)
    logging.getLogger("landmark_retrieval").setLevel(logging.WARNING)
    seeds = 1 if args.quick else args.seeds
    variants = {k: ({**v, "epochs": 10, "views": 1} if args.quick and v else v) for k, v in VARIANTS.items()
                if k in QUICK or not args.quick}
    per_dataset: Dict[str, Dict[str, Dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        groups = build_glr_from_groups(args.photos, root / "groups" / "data")
        datasets = {}
        for seed in range(seeds):
            out = root / "val" / f"s{seed}" / "data"
            make_validation_split(groups, out, fraction=0.3, distractor_landmarks=0.3, seed=seed)
            datasets[f"val/s{seed}"] = out
        if not args.quick:
            from landmark_retrieval.demo import build_demo_dataset

            datasets["groups"] = groups

            datasets["demo"] = build_demo_dataset(root / "demo" / "data")
        from landmark_retrieval.search.projection import import_tensorflow

        import_tensorflow("siamese")  # imported once, outside the timed retrieve steps
        for name, data in datasets.items():
            per_dataset[name] = evaluate_dataset(data, data.parent / "work", variants)
            scores = "; ".join(f"{v} {r['gap']:.4f}/{r['map100']:.4f}" for v, r in per_dataset[name].items())
            print(f"{name}: {scores}", file=sys.stderr)
    val = mean([r for n, r in per_dataset.items() if n.startswith("val/")])
    summary = {"validation (mean)": val, **{n: r for n, r in per_dataset.items() if not n.startswith("val/")}}
    rows = []
    for v in variants:
        cells = ", ".join(f"{n} {r[v]['gap']:.3f} / {r[v]['map100']:.3f}" for n, r in summary.items())
        extra = (f"; retrieve step {val[v]['retrieve_s']:.1f} s (baseline {val['none']['retrieve_s']:.1f} s)"
                 if v != "none" else "")
        rows.append((f"GAP / mAP@100 global-only, projection {v}", cells + extra))
    setup = (f"global-only GAP / mAP@100 with `retrieve.projection` (classical backend, `demo` preset, dim 128, "
             f"{'10' if args.quick else '30'} epochs) on {seeds} validation split(s) of the real-photo groups set's "
             f"train part (mean){'' if args.quick else ', the groups set and the demo'}; training time in the "
             "retrieve step")
    write_result("projection", setup, rows, {"summary": summary, "per_dataset": per_dataset,
                                             "variants": variants}, args.quick, out=args.json, started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
