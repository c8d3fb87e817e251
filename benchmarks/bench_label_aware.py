"""mAP@100 of the retrieval task on real photographs: global-only, verified, label-aware.

Builds the GLR2021-layout set from ``../shared/data/groups.csv`` (every other index image of a
landmark becomes a labelled train image) and runs the pipeline with the classical backend
(``demo`` preset) for a few label-aware settings. Prints JSON; skips when the photographs are
absent.

    python benchmarks/bench_label_aware.py [--photos ../shared/data] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if not (args.photos / "groups.csv").is_file():
        print(json.dumps({"skipped": f"no groups.csv in {args.photos}"}))
        return 0

    from landmark_retrieval.io.dataset import load_dataset
    from landmark_retrieval.io.progress import set_progress
    from landmark_retrieval.pipeline import run
    from landmark_retrieval.presets import get_config
    from landmark_retrieval.testing.groups import build_glr_from_groups

    set_progress(False)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = load_dataset(build_glr_from_groups(args.photos, Path(tmp) / "data", task="retrieval"))
        results["images"] = {"index": len(data.index_ids), "train": len(data.train), "test": len(data.test_ids)}
        for k, weight in ((3, 0.1), (1, 0.1), (3, 0.3)):
            conf = get_config("demo", {"retrieve": {"label_aware": True, "label_k": k},
                                       "predict": {"label_weight": weight}})
            metrics = run(conf, data, Path(tmp) / "work", Path(tmp) / "submission.csv").metrics or {}
            results[f"label_k={k},label_weight={weight}"] = {
                name: round(metrics[f"{name}_map100"], 4) for name in ("global", "verified", "label")}
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
