"""Exact kNN at GLR2020 scale: wall time and peak RSS of the streamed float16 search vs the
in-memory search, at 2048-d and PCA-512-d (synthetic random unit vectors).

Writes the database as a float16 ``.npy`` matrix in a scratch directory (seeded; what the
retrieve step builds once in ``features/<db>/globals-f16.npy``), then runs each variant in its
own child process (peak RSS of that process, wall time of the search only):

* ``streamed``: ``search.exact.knn`` on a ``search.DiskMatrix`` (``retrieve.stream``), blocks of
  ``--stream-block`` rows, all queries per block -- the retrieve step's path for a large database;
* ``in-memory`` (at the full dimension): the whole float16 matrix loaded, ``search.exact.knn`` as
  before streaming existed (``retrieve.half_precision``), on ``--in-memory-queries`` queries,
  time extrapolated linearly;
* the streamed search at ``--pca-dim`` dimensions (random 512-d unit vectors: the search cost
  of PCA-reduced descriptors; fitting the PCA is not timed).

The neighbours of the streamed and in-memory searches are compared on the queries both ran.
The full scale writes ~8 GB to the scratch directory and takes ~13 minutes on 2 idle cores::

    python benchmarks/bench_knn_scale.py [--quick] [--db 1580470] [--queries 10345] [--dim 2048]
        [--pca-dim 512] [--stream-block 131072] [--in-memory-queries 4096] [--skip-in-memory]
        [--scratch DIR] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
from suite import cpu_snapshot, machine_info, other_cpu_share, write_result

GLR2020 = (1_580_470, 10_345)


def duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.1f} s"


def unit_block(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def write_database(path: Path, n: int, dim: int, seed: int, chunk: int = 65536):
    """A seeded (n, dim) float16 matrix of random unit rows (``search.write_matrix``)."""
    from landmark_retrieval.search.exact import write_matrix

    rng = np.random.default_rng(seed)
    return write_matrix(path, n, dim, (unit_block(rng, min(chunk, n - s), dim) for s in range(0, n, chunk)))


def child(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One variant, in this (child) process: the search's wall time, this process's peak RSS."""
    from landmark_retrieval.search.exact import DiskMatrix, knn

    q = np.load(spec["queries"])[: spec.get("limit")]
    matrix = DiskMatrix(Path(spec["database"]))
    t_load = time.perf_counter()
    if spec["mode"] == "in-memory":
        db = matrix.read(0, len(matrix), np.float16)  # the matrix held in memory (retrieve.half_precision)
        load_s = time.perf_counter() - t_load
        args = {}
    else:
        db, load_s = matrix, 0.0
        args = {"stream_block": spec["stream_block"]}
    snap = cpu_snapshot()
    t0 = time.perf_counter()
    scores, indices = knn(q, db, spec["k"], **args)
    seconds = time.perf_counter() - t0
    np.save(spec["result"], indices)
    np.save(spec["result"].replace(".npy", "-scores.npy"), scores)
    return {"seconds": round(seconds, 2), "load_s": round(load_s, 2), "queries": len(q),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "other_processes_cpu_share": other_cpu_share(snap)}


def agreement(scratch: Path, d: int, n: int) -> Dict[str, float]:
    """How the streamed and in-memory results of the first ``n`` queries compare: rows with the
    same ids in the same order, and the largest difference of the scores at the same rank (float32
    rounding differs with the shapes of the BLAS products, which can swap near-tied neighbours)."""
    si, mi = np.load(scratch / f"s-{d}.npy")[:n], np.load(scratch / f"m-{d}.npy")
    ss, ms = np.load(scratch / f"s-{d}-scores.npy")[:n], np.load(scratch / f"m-{d}-scores.npy")
    return {"identical_rows": float(np.mean((si == mi).all(axis=1))),
            "same_id_sets": float(np.mean([set(a) == set(b) for a, b in zip(si, mi)])),
            "max_score_difference": float(np.abs(ss - ms).max()) if ss.size else 0.0}


def run_child(spec: Dict[str, Any]) -> Dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"variant {spec['mode']} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20,000 x 300 at 256-d / 64-d: seconds")
    ap.add_argument("--db", type=int, help=f"database rows (default {GLR2020[0]:,}; --quick 20,000)")
    ap.add_argument("--queries", type=int, help=f"queries (default {GLR2020[1]:,}; --quick 300)")
    ap.add_argument("--dim", type=int, help="descriptor dimension (default 2048; --quick 256)")
    ap.add_argument("--pca-dim", type=int, help="reduced dimension (default 512; --quick 64; 0 = skip)")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--stream-block", type=int, help="database rows per streamed block (default 131072; "
                    "--quick 4096)")
    ap.add_argument("--in-memory-queries", type=int, help="queries of the in-memory search (default 4096, "
                    "one query block as in the streamed search; --quick all); its time is extrapolated to all queries")
    ap.add_argument("--skip-in-memory", action="store_true", help="only the streamed search")
    ap.add_argument("--scratch", type=Path, help="directory for the matrices (default: a temporary directory)")
    ap.add_argument("--out", help="JSON file (default benchmarks/results/knn_scale.json)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    n_db = args.db or (20_000 if args.quick else GLR2020[0])
    n_q = args.queries or (300 if args.quick else GLR2020[1])
    dim = args.dim or (256 if args.quick else 2048)
    pca_dim = args.pca_dim if args.pca_dim is not None else (64 if args.quick else 512)
    n_mem = min(n_q, args.in_memory_queries or (n_q if args.quick else 4096))
    args.stream_block = args.stream_block or (4096 if args.quick else 131072)
    started = machine_info()
    scratch = Path(tempfile.mkdtemp(prefix="knn-scale-", dir=args.scratch))
    figures: Dict[str, Any] = {"db": n_db, "queries": n_q, "k": args.k, "stream_block": args.stream_block,
                               "in_memory_queries": n_mem, "data": "random unit vectors (seed 0), float16 on disk"}
    rows = []
    try:
        for d in [dim] + ([pca_dim] if pca_dim else []):
            t0 = time.perf_counter()
            db_path = scratch / f"db-{d}.npy"
            write_database(db_path, n_db, d, seed=0)
            q_path = scratch / f"q-{d}.npy"
            np.save(q_path, unit_block(np.random.default_rng(1), n_q, d))
            fig: Dict[str, Any] = {"write_database_s": round(time.perf_counter() - t0, 1),
                                   "database_gb": round(db_path.stat().st_size / 2**30, 2)}
            base = {"database": str(db_path), "queries": str(q_path), "k": args.k, "stream_block": args.stream_block}
            fig["streamed"] = run_child(dict(base, mode="streamed", result=str(scratch / f"s-{d}.npy")))
            label = f"{n_q:,} x {n_db:,} x {d}-d, k = {args.k}"
            s = fig["streamed"]
            rows.append((f"exact kNN streamed from float16 on disk: {label}",
                         f"{duration(s['seconds'])}, peak RSS {s['peak_rss_gb']:.1f} GB"))
            if not args.skip_in_memory and d == dim:
                m = fig["in_memory"] = run_child(dict(base, mode="in-memory", limit=n_mem,
                                                      result=str(scratch / f"m-{d}.npy")))
                m["extrapolated_seconds"] = round(m["seconds"] * n_q / max(1, n_mem), 1)
                same = fig["agreement"] = agreement(scratch, d, n_mem)
                rows.append((f"exact kNN, float16 matrix in memory (before): {label}",
                             f"{duration(m['extrapolated_seconds'])} (from {n_mem:,} queries), peak RSS "
                             f"{m['peak_rss_gb']:.1f} GB; same neighbours as streamed in "
                             f"{same['identical_rows']:.2%} of queries, scores within "
                             f"{same['max_score_difference']:.1e}"))
            figures[f"dim_{d}"] = fig
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    setup = (f"exact top-{args.k} inner-product search (`search.exact.knn`) of random unit vectors, each variant in a "
             f"child process (peak RSS of that process; time of the search only, one run), streamed in blocks of "
             f"{args.stream_block:,} rows vs the float16 matrix in memory; PCA-{pca_dim} = random {pca_dim}-d vectors")
    write_result("knn_scale", setup, rows, figures, args.quick, args.out, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
