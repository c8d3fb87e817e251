"""GAP and mAP@100 of global-descriptor post-processing on real photographs.

Builds the GLR2020-layout set from ``../shared/data/groups.csv``, extracts features once with
the classical backend (``demo`` preset), then retrieves and scores with PCA / PCA-whitening,
database-side augmentation (DBA) and alpha-query expansion (QE), global-only and verified.
Prints JSON; skips when the photographs are absent.

    python benchmarks/bench_postprocess.py [--photos ../shared/data] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

VARIANTS = {
    "base": {},
    "pca": {"whitening": "pca"},
    "whiten": {"whitening": "whiten"},
    "whiten-32": {"whitening": "whiten", "pca_dim": 32},
    "dba-1": {"dba_k": 1},
    "qe-1": {"qe_k": 1},
    "qe-2": {"qe_k": 2},
    "dba-1+qe-1": {"dba_k": 1, "qe_k": 1},
    "whiten+dba-1+qe-1": {"whitening": "whiten", "dba_k": 1, "qe_k": 1},
}


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
        data = load_dataset(build_glr_from_groups(args.photos, Path(tmp) / "data"))
        for name, retrieve in VARIANTS.items():
            conf = get_config("demo", {"retrieve": retrieve})
            t0 = time.perf_counter()
            m = run(conf, data, Path(tmp) / "work", Path(tmp) / "submission.csv").metrics or {}
            results[name] = {key: round(m[key], 4) for key in ("global_gap", "verified_gap", "global_map100",
                                                                "verified_map100")}
            results[name]["run_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
