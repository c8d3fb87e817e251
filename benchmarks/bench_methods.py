"""The method comparison: every method of ``landmark_retrieval.compare.METHODS`` (global descriptor
x local features x estimator x learned projection) through the whole pipeline, on real photos and
on the demo, and the table in docs/comparing-methods.md.

Datasets:

* ``GLR photos``: the GLR2020-layout set built from ``../shared/data/groups.csv`` (63 train
  images of 24 landmarks; 34 test images with a landmark, 38 distractors; skipped when absent);
* ``validation``: a validation split of the GLR photos' train part (30 % of the kept landmarks'
  images become test images, 30 % of the landmarks distractors; seed 0; never the test labels);
* ``demo``: the embedded demo dataset (``landmark_retrieval.demo``; synthetic views of 13
  photographs, 40 test images of which 12 are distractors).

Per method and dataset: GAP and mAP@100 global-only and verified, extraction ms per image
(the extract step over database + test images, codebook/vocabulary/GMM fitting included, model
loading excluded), descriptor bytes per image as stored (global + local). A method whose options
or dependencies are missing is listed as skipped, with the reason. Methods are defined in ONE
place, ``METHODS`` in ``src/landmark_retrieval/compare.py`` (a new method is one line there)::

    python benchmarks/bench_methods.py                  # all methods, both datasets (~10 min on 2 cores)
    python benchmarks/bench_methods.py --quick          # the quick methods on the demo (~1 min)
    python benchmarks/bench_methods.py --methods vlad+sift colour
    python benchmarks/bench_methods.py --readme-only    # rewrite the doc's table from results/methods.json
    python benchmarks/bench_methods.py --check          # exit 1 when that table is stale
    python benchmarks/run.py methods                    # the same through the suite

It writes ``benchmarks/results/methods.json`` and the table between ``<!-- methods:start -->`` and
``<!-- methods:end -->`` in docs/comparing-methods.md (renderer and writer: ``suite.py``), then
the benchmark table in docs/benchmarks.md, which lists this result's summary rows.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from suite import (
    METHODS_DOC,
    REPO,
    RESULTS,
    machine_info,
    update_benchmark_table,
    update_methods_table,
    write_result,
)

GLR, VAL, DEMO = "GLR photos", "validation", "demo"


def summary_rows(rows: List[Dict[str, Any]]) -> List[Tuple[str, str]]:
    """A few lines for the suite's benchmark table (the full table is docs/comparing-methods.md)."""
    ok = [r for r in rows if r["status"] == "ok"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    run = sorted({r["method"] for r in ok})
    out = [("methods run", f"{len(run)} of the {len(methods)} chosen; the table is in [Comparing methods]"
            "(comparing-methods.md)")]
    for dataset in dict.fromkeys(r["dataset"] for r in ok):
        mine = [r for r in ok if r["dataset"] == dataset]
        best = max(mine, key=lambda r: (r["verified_gap"] if r["verified_gap"] is not None else r["global_gap"] or 0))
        best_global = max(mine, key=lambda r: r["global_gap"] or 0)
        gap = best["verified_gap"] if best["verified_gap"] is not None else best["global_gap"]
        out.append((f"{dataset}: best GAP; best global-only GAP",
                    f"`{best['method']}` {gap:.4f}; `{best_global['method']}` {best_global['global_gap']:.4f}"))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick methods on the demo only")
    parser.add_argument("--methods", nargs="+", metavar="NAME", help="these methods (default: all, or the quick ones)")
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder with groups.csv (real photos); skipped when absent")
    parser.add_argument("--keep", type=Path, help="work in this folder (kept, reused) instead of a temporary one")
    parser.add_argument("--readme-only", action="store_true",
                        help=f"run nothing; rewrite {METHODS_DOC.name}'s table")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of results/methods.json for the methods not run now (add or re-measure "
                             "a few methods without running them all)")
    parser.add_argument("--check", action="store_true",
                        help=f"run nothing; exit 1 when {METHODS_DOC.name}'s table is stale")
    args = parser.parse_args(argv)
    if args.readme_only or args.check:
        current = update_methods_table(check=args.check)
        state = "is current" if current else ("is stale" if args.check else "rewritten")
        print(f"{METHODS_DOC.name}: method table {state}")
        return 1 if args.check and not current else 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banners (projection training, models)
    from landmark_retrieval import compare
    from landmark_retrieval.demo import build_demo_dataset
    from landmark_retrieval.io.dataset import Dataset, load_dataset
    from landmark_retrieval.io.progress import set_progress
    from landmark_retrieval.split import make_validation_split
    from landmark_retrieval.testing.groups import build_glr_from_groups

    set_progress(False)
    logging.getLogger("landmark_retrieval").setLevel(logging.ERROR)
    names = args.methods or (list(compare.QUICK) if args.quick else list(compare.METHODS))
    started = machine_info()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_methods_") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        datasets: Dict[str, Dataset] = {}  # loaded once
        if not args.quick and (args.photos / "groups.csv").is_file():
            groups = build_glr_from_groups(args.photos, root / "data-glr")
            datasets[GLR] = load_dataset(groups)
            # a validation split of its train part (never the test labels), as the presets were chosen on
            make_validation_split(groups, root / "data-val", fraction=0.3, distractor_landmarks=0.3, seed=0)
            datasets[VAL] = load_dataset(root / "data-val")
        elif not args.quick:
            print(f"no groups.csv in {args.photos}: the real-photo dataset is left out", file=sys.stderr)
        datasets[DEMO] = load_dataset(build_demo_dataset(root / "data-demo"))
        rows = []
        for name in names:  # method by method: a progress line each
            for row in compare.compare_methods([name], datasets, root / "runs"):
                rows.append(row)
                what = row.reason
                if row.status == "ok":
                    gap = f"{row.global_gap:.4f}" + ("" if row.verified_gap is None else f" -> {row.verified_gap:.4f}")
                    what = f"GAP {gap}, {row.extract_ms:.0f} ms/img"
                print(f"  {name:<24} {row.dataset:<11} {row.status:<8} {what} ({row.seconds:.0f} s)", flush=True)
    figures = {"datasets": list(datasets), "methods": names, "rows": [r.to_dict() for r in rows],
               "seconds": round(time.perf_counter() - t0, 1)}
    previous = RESULTS / "methods.json"
    if args.merge and previous.is_file():  # earlier rows of the methods not run now, in registry order
        doc = json.loads(previous.read_text(encoding="utf-8"))
        old = doc["figures"]
        kept = [r for r in old["rows"] if r["method"] not in names and r["method"] in compare.METHODS]
        order = {name: i for i, name in enumerate(compare.METHODS)}
        figures["rows"] = sorted(kept + figures["rows"], key=lambda r: order[r["method"]])
        figures["datasets"] = list(dict.fromkeys(list(datasets) + list(old["datasets"])))
        figures["methods"] = list(dict.fromkeys(r["method"] for r in figures["rows"]))
        # every earlier run whose rows may remain, newest first
        figures["earlier"] = [{"command": doc.get("command"), "created": doc.get("created", "")},
                              *old.get("earlier", [])]
    setup = ("every method of `landmark_retrieval.compare.METHODS` through the whole pipeline on "
             f"{' and '.join(datasets)}; the table is in [Comparing methods](comparing-methods.md)")
    write_result("methods", setup, summary_rows(figures["rows"]), figures, args.quick, started=started)
    current = update_methods_table()
    update_benchmark_table()  # the benchmark table lists this result's summary rows too
    state = "unchanged" if current else "rewritten"
    print(f"{METHODS_DOC.name}: method table {state} ({figures['seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
