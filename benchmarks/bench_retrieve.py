"""Retrieval throughput: exact top-k by inner product (``search.exact.knn``) on random unit descriptors.

Times ``knn`` with faiss (when installed) and with numpy blocks (median of repeats) and
extrapolates to the GLR2020 public set (1,580,470 train x 10,345 test images).

    python benchmarks/bench_retrieve.py [--quick] [--db 200000] [--queries 2000] [--dim 2048] [--k 100]
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import numpy as np
from suite import machine_info, median_time, set_patience, write_result

GLR2020_PAIRS = 1_580_470 * 10_345


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20,000 x 200, 2 repeats")
    ap.add_argument("--db", type=int, help="database size (default 200,000; --quick 20,000)")
    ap.add_argument("--queries", type=int, help="queries (default 2000; --quick 200)")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--repeats", type=int, help="default 3 (--quick 2)")
    ap.add_argument("--out", help="JSON file (default benchmarks/results/retrieve.json)")
    args = ap.parse_args(argv)
    n_db = args.db or (20_000 if args.quick else 200_000)
    n_q = args.queries or (200 if args.quick else 2000)
    repeats = args.repeats or (2 if args.quick else 3)
    set_patience(10 if args.quick else 300)
    started = machine_info()

    from landmark_retrieval.search.exact import knn

    rng = np.random.default_rng(0)
    db = rng.standard_normal((n_db, args.dim), dtype=np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = rng.standard_normal((n_q, args.dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    try:
        import faiss  # noqa: F401

        engines = [("faiss", True), ("numpy", False)]
    except ImportError:
        engines = [("numpy", False)]
    figures = {"db": n_db, "queries": n_q, "dim": args.dim, "k": args.k, "repeats": repeats}
    rows = []
    for name, use_faiss in engines:
        seconds, times = median_time(lambda use_faiss=use_faiss: knn(q, db, args.k, use_faiss=use_faiss), repeats)
        rate = n_db * n_q / seconds
        figures[name] = {"seconds": round(seconds, 3), "times": [round(t, 3) for t in times],
                         "g_pairs_per_s": round(rate / 1e9, 3), "glr2020_minutes": round(GLR2020_PAIRS / rate / 60, 1)}
        rows.append((f"{name}: {n_q:,} x {n_db:,} x {args.dim}-d, k = {args.k}",
                     f"{seconds:.2f} s ({rate / 1e9:.2f} G pairs/s); GLR2020 public scale ~"
                     f"{GLR2020_PAIRS / rate / 60:.1f} min"))
    setup = (f"exact top-{args.k} by inner product of random unit {args.dim}-d descriptors "
             f"(`search.exact.knn`, all cores), median of {repeats} runs; extrapolated to 1,580,470 x 10,345")
    write_result("retrieve", setup, rows, figures, args.quick, args.out, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
