"""Retrieval throughput: exact top-k by inner product on random unit descriptors.

    python benchmarks/bench_retrieve.py [--db 200000] [--queries 2000] [--dim 2048] [--k 100]

Extrapolates to the GLR2020 public set (1,580,470 train x 10,345 test).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from landmark_retrieval.retrieve import knn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--k", type=int, default=100)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    db = rng.standard_normal((args.db, args.dim), dtype=np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    full = 1_580_470 * 10_345
    for use_faiss in (True, False):
        t0 = time.perf_counter()
        knn(q, db, args.k, use_faiss=use_faiss)
        dt = time.perf_counter() - t0
        rate = args.db * args.queries / dt
        print(f"{'faiss' if use_faiss else 'numpy'}: {args.queries} x {args.db} x {args.dim} in {dt:.2f} s "
              f"({rate / 1e9:.2f} G pairs/s); GLR2020 public scale: ~{full / rate / 60:.1f} min")


if __name__ == "__main__":
    main()
