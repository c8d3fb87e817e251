"""Extraction on a local Dask cluster vs in this process: the overhead of ``run.cluster``.

The classical backend (``demo`` preset: RootSIFT, VLAD codebook) on a generated demo dataset;
medians of ``--repeats`` extractions into fresh work directories:

* **local**: :func:`landmark_retrieval.extract.extract` in this process (one extraction thread,
  ``extract.num_workers`` decoding threads), as ``landmark-retrieval extract``;
* **cluster**: the same call with ``DaskEngine`` on ``distributed.LocalCluster(n_workers=N,
  threads_per_worker=1, processes=True)``, started once (its start-up time is reported apart);
  the first extraction also builds the backend on the workers (reported apart: ``first``).

Timed: the extraction of every image (``aggregate=False``); the codebook fit and VLAD encoding
that follow run in the client either way (timed once, apart). The stores are checked to hold
every image.

    python benchmarks/bench_cluster.py [--workers 2] [--repeats 3] [--views 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--views", type=int, default=3, help="train and test views per landmark (DemoSpec)")
    args = parser.parse_args()

    import distributed

    from landmark_retrieval.backends.cluster import DaskEngine
    from landmark_retrieval.demo import DemoSpec, build_demo_dataset
    from landmark_retrieval.extract import extract
    from landmark_retrieval.io.dataset import load_dataset
    from landmark_retrieval.io.progress import set_progress
    from landmark_retrieval.io.store import FeatureStore
    from landmark_retrieval.presets import get_config

    set_progress(False)
    conf = get_config("demo")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = build_demo_dataset(root / "data", DemoSpec(train_views=args.views, test_views=args.views, seed=11))
        ds = load_dataset(data)
        n = len(ds.train_ids) + len(ds.test_ids)

        def timed(name: str, engine=None) -> float:
            work = root / f"{name}-{time.perf_counter_ns()}"
            t0 = time.perf_counter()
            extract(conf, ds, work, engine=engine, aggregate=False)
            seconds = time.perf_counter() - t0
            with FeatureStore(work / "features" / "train") as store:
                assert len(store.local_ids) == len(ds.train_ids)
            return seconds

        local = [timed("local") for _ in range(args.repeats)]
        work = root / "aggregate"
        extract(conf, ds, work, aggregate=False)
        t0 = time.perf_counter()
        extract(conf, ds, work)
        aggregate = time.perf_counter() - t0
        t0 = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        client = distributed.Client(cluster)
        client.wait_for_workers(args.workers)
        startup = time.perf_counter() - t0
        try:
            engine = DaskEngine(client)
            first = timed("first", engine)
            warm = [timed("cluster", engine) for _ in range(args.repeats)]
        finally:
            client.close()
            cluster.close()

    med_local, med_warm = statistics.median(local), statistics.median(warm)
    print(f"{n} images ({len(ds.train_ids)} train, {len(ds.test_ids)} test), demo preset, median of {args.repeats}")
    print(f"local (this process):           {med_local:6.2f} s  {n / med_local:6.1f} images/s")
    print(f"Dask, {args.workers} workers:                {med_warm:6.2f} s  {n / med_warm:6.1f} images/s"
          f"  ({med_warm / med_local:.2f} x local)")
    print(f"Dask, first call (backend built): {first:5.2f} s")
    print(f"then, in the client either way: codebook + VLAD {aggregate:.2f} s")
    print(f"LocalCluster start-up:          {startup:6.2f} s")


if __name__ == "__main__":
    main()
