"""Approximate kNN (``retrieve.index=ivfpq`` / ``hnsw``): recall@100 and @10 against the exact
search, build time, index size and query time, on clustered synthetic descriptors.

Random unit vectors in high dimension have no neighbourhood structure (every similarity is
~0), which makes any approximate index look useless; real landmark descriptors are clustered.
The data here is a seeded mixture: regions, landmarks inside regions (sizes with a long tail,
like GLDv2), images around their landmark, and 20 % near-duplicates of another image of the
same landmark; queries are new images of random landmarks. Defaults: 200,000 x 512-d (the
dimension of PCA-512 descriptors; ``--dim 2048`` builds ~4x slower), 1,000 queries. The indexes
are built with the library's searchers (HNSW in one thread: deterministic), each search-time
setting is timed over all queries at once (median of ``--repeats``).

    python benchmarks/bench_ann.py [--quick] [--db 200000] [--dim 512] [--queries 1000] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from suite import machine_info, median_time, set_patience, write_result


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, n_queries: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``(queries, database)`` float32 unit rows of the mixture described in the module docstring."""
    rng = np.random.default_rng(seed)
    noise = lambda rows, sigma: sigma * rng.standard_normal((rows, dim), dtype=np.float32) / np.sqrt(dim)  # noqa: E731
    n_regions, n_landmarks = max(2, n // 5000), max(4, n // 40)
    regions = unit(rng.standard_normal((n_regions, dim), dtype=np.float32))
    centres = unit(regions[rng.integers(0, n_regions, n_landmarks)] + noise(n_landmarks, 1.0))
    weights = 1.0 / np.arange(1, n_landmarks + 1) ** 0.7  # long tail of landmark sizes
    weights /= weights.sum()
    of = rng.choice(n_landmarks, n, p=weights)
    db = np.empty((n, dim), np.float32)
    for s in range(0, n, 65536):
        rows = of[s:s + 65536]
        db[s:s + len(rows)] = unit(centres[rows] + noise(len(rows), 0.7))
    dup = np.flatnonzero(rng.random(n) < 0.2)
    first = {}
    for i in np.argsort(of, kind="stable"):  # a near-duplicate of the landmark's first image
        first.setdefault(int(of[i]), int(i))
    src = np.array([first[int(of[i])] for i in dup], np.int64)
    keep = src != dup
    db[dup[keep]] = unit(db[src[keep]] + noise(int(keep.sum()), 0.2))
    q = unit(centres[rng.choice(n_landmarks, n_queries, p=weights)] + noise(n_queries, 0.7))
    return q, db


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, truth)]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5,000 x 64-d, 100 queries, small indexes: seconds")
    ap.add_argument("--db", type=int, help="database size (default 200,000; --quick 5,000)")
    ap.add_argument("--dim", type=int, help="dimension (default 512; --quick 64)")
    ap.add_argument("--queries", type=int, help="queries (default 1000; --quick 100)")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--repeats", type=int, help="timed searches per setting (default 3; --quick 1)")
    ap.add_argument("--out", help="JSON file (default benchmarks/results/ann.json)")
    args = ap.parse_args(argv)
    n = args.db or (5_000 if args.quick else 200_000)
    dim = args.dim or (64 if args.quick else 512)
    n_q = args.queries or (100 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    set_patience(5 if args.quick else 120)
    started = machine_info()

    import faiss

    from landmark_retrieval.config import RetrieveConfig
    from landmark_retrieval.search.ann import load_or_build, query_index
    from landmark_retrieval.search.exact import SearchContext, knn

    t0 = time.perf_counter()
    q, db = clustered(n, dim, n_q)
    figures: Dict[str, Any] = {"db": n, "dim": dim, "queries": n_q, "k": args.k, "repeats": repeats,
                               "data_s": round(time.perf_counter() - t0, 1), "data": "clustered (see docstring)"}
    exact_s, _ = median_time(lambda: knn(q, db, args.k), repeats)
    _, truth = knn(q, db, args.k)
    figures["exact"] = {"ms_per_query": round(1000 * exact_s / n_q, 3), "database_mb": round(db.nbytes / 2**20, 1)}
    rows: List[Tuple[str, str]] = [(f"exact (flat) search, {n_q:,} queries x {n:,} x {dim}-d",
                                    f"{1000 * exact_s / n_q:.2f} ms/query (float32 matrix {db.nbytes / 2**20:.0f} MB)")]
    conf = RetrieveConfig()
    if args.quick:
        conf.ivfpq.nlist, conf.ivfpq.m, conf.ivfpq.train_size = 64, 16, 5000
    sweeps = {"ivfpq": ("nprobe", (8, 32, 128)), "hnsw": ("ef_search", (64, 128, 256))}
    for name, (param, values) in sweeps.items():
        ctx = SearchContext(conf)
        t0 = time.perf_counter()
        index = load_or_build(name, db, ctx)
        build_s = time.perf_counter() - t0
        size_mb = faiss.serialize_index(index).nbytes / 2**20
        opts = getattr(conf, name)
        fig: Dict[str, Any] = {"build_s": round(build_s, 1), "index_mb": round(size_mb, 1),
                               "options": {k: v for k, v in vars(opts).items() if k != param}, "search": {}}
        for value in values:
            setattr(opts, param, value)
            seconds, _ = median_time(lambda n=name, i=index, c=ctx: query_index(n, i, q, db, args.k, c), repeats)
            _, found = query_index(name, index, q, db, args.k, ctx)
            fig["search"][f"{param}={value}"] = {
                "ms_per_query": round(1000 * seconds / n_q, 3), "recall@100": round(recall(found, truth, 100), 4),
                "recall@10": round(recall(found, truth, 10), 4)}
        figures[name] = fig
        best = " / ".join(f"{v['recall@100']:.3f}" for v in fig["search"].values())
        times = " / ".join(f"{v['ms_per_query']:.2f}" for v in fig["search"].values())
        described = (f"IVF{opts.nlist},PQ{opts.m}x{opts.bits}, refine x{opts.refine_factor}" if name == "ivfpq"
                     else f"HNSW{opts.m}, efConstruction {opts.ef_construction}, one thread")
        rows.append((f"`retrieve.index={name}` ({described}), {param} {' / '.join(map(str, values))}",
                     f"recall@100 {best}; {times} ms/query; build {build_s:.0f} s, index {size_mb:.0f} MB"))
    setup = (f"approximate top-{args.k} (`retrieve.index`) vs exact on clustered synthetic {dim}-d descriptors "
             f"({n:,} database, {n_q:,} queries; regions > landmarks with long-tailed sizes > images, 20 % "
             "near-duplicates); query time over all queries at once, median of repeats")
    write_result("ann", setup, rows, figures, args.quick, args.out, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
