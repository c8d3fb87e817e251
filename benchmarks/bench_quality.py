"""Recognition quality: GAP and mAP@100 of non-landmark handling, inlier confidence, deeper
re-ranking and ratio + mutual matching, one by one and combined (classical backend, ``demo``
preset as the base).

Datasets (real photographs from ``../shared/data``; skipped when absent):

* ``groups``: the GLR2020-layout set built from ``groups.csv`` (63 train images of 24
  landmarks; 34 test images with a landmark, 38 distractors);
* ``groups-nl``: the same with every other distractor moved out of the test set into a folder of
  non-landmark images, the reference set of rule (c) (``predict.nonlandmark_dir``);
* ``val-all/s<seed>`` and ``val-one/s<seed>``: validation splits of the ``groups`` set's
  *train part* made by ``landmark_retrieval.split`` (30 % of the kept landmarks' images become
  test images, 30 % of the landmarks become distractors; ``val-one`` keeps one distractor per
  held-out landmark), never looking at the test labels.

Features are extracted and retrieved once per dataset; verification runs once per distinct
``verify`` setting (timed, after one warm-up run), prediction and scoring for every variant. The
time per test image is verification + prediction on 2 cores (extraction and retrieval are shared
by all variants); with 17-72 test images per set it varies by about +-20 ms between runs.

    python benchmarks/bench_quality.py [--photos ../shared/data] [--seeds 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import copy
import csv
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
NL = "<nonlandmark>"  # replaced by the dataset's non-landmark folder

#: one component at a time, over the demo preset
COMPONENTS: Dict[str, Dict[str, Any]] = {
    "base (demo preset)": {},
    "preset classical-best": {"_preset": "classical-best"},
    "a: min_inliers 10": {"predict": {"min_inliers": 10}},
    "a: min_inliers 15": {"predict": {"min_inliers": 15}},
    "a: min_inliers 20": {"predict": {"min_inliers": 20}},
    "a: min_inliers 30": {"predict": {"min_inliers": 30}},
    "a: min_inliers 15, factor 0.01": {"predict": {"min_inliers": 15, "unverified_factor": 0.01}},
    "b: test similarity": {"predict": {"test_similarity": True}},
    "b: test similarity, margin 0.05": {"predict": {"test_similarity": True, "nonlandmark_margin": 0.05}},
    "b: test similarity, margin -0.05": {"predict": {"test_similarity": True, "nonlandmark_margin": -0.05}},
    "b: test similarity, k 2": {"predict": {"test_similarity": True, "nonlandmark_k": 2}},
    "c: non-landmark folder": {"predict": {"nonlandmark_dir": NL}},
    "c: non-landmark folder, margin -0.05": {"predict": {"nonlandmark_dir": NL, "nonlandmark_margin": -0.05}},
    "c: classical-best + non-landmark folder": {"_preset": "classical-best", "predict": {"nonlandmark_dir": NL}},
    "c: classical-best + non-landmark folder, margin -0.05": {
        "_preset": "classical-best", "predict": {"nonlandmark_dir": NL, "nonlandmark_margin": -0.05}},
    "inlier confidence": {"predict": {"confidence": "inliers"}},
    "inlier confidence, global weight 0.1": {"predict": {"confidence": "inliers", "inlier_global_weight": 0.1}},
    "inlier confidence, global weight 0.3": {"predict": {"confidence": "inliers", "inlier_global_weight": 0.3}},
    "re-rank 30": {"verify": {"num_to_rerank": 30}},
    "re-rank 100": {"verify": {"num_to_rerank": 100}},
    "mutual matching": {"verify": {"mutual": True}},
    "ratio 0.8 + mutual": {"verify": {"ratio_test": 0.8, "mutual": True}},
}

#: the combinations searched for the best one (every choice of each)
GRID: Dict[str, List[Tuple[str, Dict[str, Any]]]] = {
    "confidence": [("", {}), ("inliers", {"predict": {"confidence": "inliers"}}),
                   ("inliers(w0.3)", {"predict": {"confidence": "inliers", "inlier_global_weight": 0.3}})],
    "a": [("", {}), ("a15", {"predict": {"min_inliers": 15}})],
    "b": [("", {}), ("b", {"predict": {"test_similarity": True}})],
    "rerank": [("", {}), ("rr30", {"verify": {"num_to_rerank": 30}})],
    "matching": [("", {}), ("mutual", {"verify": {"mutual": True}})],
}


def merge(*parts: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for part in parts:
        for section, values in part.items():
            out.setdefault(section, {}).update(values)
    return out


def grid() -> Dict[str, Dict[str, Any]]:
    combos = {}
    for choice in itertools.product(*GRID.values()):
        name = " + ".join(n for n, _ in choice if n) or "base"
        combos[name] = merge(*(o for _, o in choice))
    return combos


def build_groups_nl(groups: Path, root: Path) -> Tuple[Path, Path]:
    """``groups`` with every other distractor (sorted by id) moved to ``root/nonlandmark``."""
    shutil.copytree(groups, root / "data", symlinks=True)
    data, folder = root / "data", root / "nonlandmark"
    folder.mkdir()
    with open(data / "solution.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    distractors = sorted(r["id"] for r in rows if not r["landmarks"])
    moved = set(distractors[1::2])
    for path in sorted((data / "test").rglob("*")):
        if path.stem in moved:
            os.rename(path, folder / path.name)
    with open(data / "solution.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "landmarks", "Usage"])
        w.writerows((r["id"], r["landmarks"], r["Usage"]) for r in rows if r["id"] not in moved)
    return data, folder


def evaluate_dataset(name: str, data: Path, work: Path, variants: Dict[str, Dict[str, Any]],
                     nonlandmark: Optional[Path]) -> Dict[str, Dict[str, float]]:
    """Scores and time per test image of every variant on one dataset."""
    from landmark_retrieval.evaluate import evaluate_run
    from landmark_retrieval.extract import extract, extract_nonlandmark
    from landmark_retrieval.io.dataset import load_dataset
    from landmark_retrieval.io.layout import verification_path
    from landmark_retrieval.predict import predict
    from landmark_retrieval.presets import get_config
    from landmark_retrieval.retrieve import retrieve
    from landmark_retrieval.verify import verify

    dataset = load_dataset(data)
    n_test = len(dataset.test_ids)
    base = get_config("demo", {"retrieve": {"k": 100}})
    t0 = time.perf_counter()
    extract(base, dataset, work)
    retrieve(base, dataset, work)
    shared_s = time.perf_counter() - t0
    verify(base, dataset, work)  # warm-up (file cache, worker start): the timed runs below are comparable
    if nonlandmark is not None:  # extracted once, outside the timed predictions
        extract_nonlandmark(get_config(base, {"predict": {"nonlandmark_dir": str(nonlandmark)}}), work)
    verified: Dict[str, Tuple[Path, float]] = {}
    out: Dict[str, Dict[str, float]] = {}
    for vname, overrides in variants.items():
        overrides = copy.deepcopy(overrides)
        preset = overrides.pop("_preset", "demo")
        if overrides.get("predict", {}).get("nonlandmark_dir") == NL:
            if nonlandmark is None:
                continue
            overrides["predict"]["nonlandmark_dir"] = str(nonlandmark)
        conf = get_config(preset, merge({"retrieve": {"k": 100}}, overrides))
        key = json.dumps(conf.to_dict()["verify"], sort_keys=True)
        if key not in verified:
            t0 = time.perf_counter()
            verify(conf, dataset, work, overwrite=True)
            seconds = time.perf_counter() - t0
            saved = work / f"verification-{len(verified)}.csv"
            shutil.copyfile(verification_path(work), saved)
            verified[key] = (saved, seconds)
        saved, verify_s = verified[key]
        shutil.copyfile(saved, verification_path(work))
        t0 = time.perf_counter()
        predict(conf, dataset, work)
        predict_s = time.perf_counter() - t0
        m = evaluate_run(conf, dataset, work)
        out[vname] = {"gap": m["verified_gap"], "map100": m["verified_map100"], "top1": m["verified_top1"],
                      "global_gap": m["global_gap"], "ms_per_test": 1000 * (verify_s + predict_s) / n_test}
    print(f"{name}: {n_test} test images, extract + retrieve {shared_s:.1f} s", file=sys.stderr)
    return out


def mean_over(results: Dict[str, Dict[str, Dict[str, float]]], prefix: str) -> Dict[str, Dict[str, float]]:
    """Per variant, the mean of each metric over the datasets whose name starts with ``prefix``."""
    sets = [r for name, r in results.items() if name.startswith(prefix)]
    if not sets:
        return {}
    names = [v for v in sets[0] if all(v in s for s in sets)]
    return {v: {k: sum(s[v][k] for s in sets) / len(sets) for k in sets[0][v]} for v in names}


def table(columns: Dict[str, Dict[str, Dict[str, float]]], rows: List[str]) -> str:
    head = "| variant | " + " | ".join(f"{c} GAP | {c} mAP@100 | {c} ms/img" for c in columns) + " |"
    lines = [head, "|---" * (1 + 3 * len(columns)) + "|"]
    for row in rows:
        cells = []
        for col in columns.values():
            r = col.get(row)
            cells += [f"{r['gap']:.4f}", f"{r['map100']:.4f}", f"{r['ms_per_test']:.0f}"] if r else ["", "", ""]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--seeds", type=int, default=5, help="validation splits per distractor mode")
    parser.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if not (args.photos / "groups.csv").is_file():
        print(json.dumps({"skipped": f"no groups.csv in {args.photos}"}))
        return 0

    from landmark_retrieval.io.progress import set_progress
    from landmark_retrieval.split import make_validation_split
    from landmark_retrieval.testing.groups import build_glr_from_groups

    set_progress(False)
    import logging

    logging.getLogger("landmark_retrieval").setLevel(logging.WARNING)
    variants = {**COMPONENTS, **{f"grid: {k}": v for k, v in grid().items()}}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        if root.exists() and args.keep:
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        groups = build_glr_from_groups(args.photos, root / "groups" / "data")
        datasets: Dict[str, Tuple[Path, Optional[Path]]] = {"groups": (groups, None)}
        datasets["groups-nl"] = build_groups_nl(groups, root / "groups-nl")
        for mode, per in (("val-all", 0), ("val-one", 1)):
            for seed in range(args.seeds):
                out = root / mode / f"s{seed}" / "data"
                make_validation_split(groups, out, fraction=0.3, distractor_landmarks=0.3, seed=seed,
                                      distractors_per_landmark=per)
                datasets[f"{mode}/s{seed}"] = (out, None)
        results = {name: evaluate_dataset(name, data, data.parent / "work", variants, nl)
                   for name, (data, nl) in datasets.items()}
    summary = {"groups": results["groups"], "groups-nl": results["groups-nl"],
               "val-all": mean_over(results, "val-all/"), "val-one": mean_over(results, "val-one/")}
    val = {v: {k: (summary["val-all"][v][k] + summary["val-one"][v][k]) / 2 for k in summary["val-all"][v]}
           for v in summary["val-all"]}
    summary["val"] = val
    best = max((v for v in val if v.startswith("grid: ")),  # ties: fewer components, then faster
               key=lambda v: (round(val[v]["gap"], 4), -v.count("+"), -val[v]["ms_per_test"]))
    report = {"datasets": {n: sorted(d.keys()) for n, d in results.items()}, "summary": summary,
              "per_dataset": results, "best_on_validation": best}
    report["validation_by_mode"] = {v: {m: round(summary[m][v]["gap"], 4) for m in ("val-all", "val-one")}
                                    for v in val}
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)
    cols = {"groups": summary["groups"], "groups-nl": summary["groups-nl"], "val (mean of 10 splits)": val}
    print("\n" + table(cols, list(COMPONENTS) + [best, "grid: base"]))
    ranked = sorted((v for v in val if v.startswith("grid: ")), key=lambda v: -val[v]["gap"])[:10]
    print("\nBest combinations on the validation splits:\n" + table(cols, ranked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
