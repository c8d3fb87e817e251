#!/usr/bin/env python
"""Benchmark DELG feature extraction with the tiny test model (no download needed).

Exports :func:`landmark_retrieval.testing.export_test_model` to a temporary directory, writes N
deterministic textured JPEGs, then times

1. the extract step as the pipeline runs it (``extract.extract_split``: threaded decoding,
   ``DelgBackend.extract`` per image, features streamed to HDF5 shards), with the time spent
   inside the model call measured separately;
2. decoding only: ``iter_images`` over the same files;
3. model call only: ``backend.model(...)`` on already decoded images (a cache of at most 64
   images, cycled);

and prints images/second, the share of the full-extraction wall time spent outside the model
call (decoding waits, resizing, post-processing, HDF5 writes) and the peak RSS after each phase.

The test network is ~100x cheaper than ResNet-50 DELG, so the numbers measure the pipeline
overhead around the model rather than DELG itself.

Usage::

    python benchmarks/bench_delg_extract.py --images 200 --size 512 --style tf1
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 1024.0 / 1024.0


def write_images(directory: Path, n: int, size: int, seed: int) -> list:
    """N textured JPEGs, longest side ``size``, aspect ratios between 3:4 and 4:3."""
    from landmark_retrieval.testing.delg_export import textured_image

    rng = np.random.default_rng(seed)
    bases = [textured_image(size, size, seed + i) for i in range(8)]
    items = []
    for i in range(n):
        base = bases[i % len(bases)]
        short = int(rng.integers(int(size * 0.75), size + 1))
        h, w = (size, short) if rng.random() < 0.5 else (short, size)
        y0, x0 = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        img = np.roll(base, int(rng.integers(0, size)), axis=1)[y0:y0 + h, x0:x0 + w]
        noise = rng.integers(-12, 13, img.shape, dtype=np.int16)  # every image is different
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        path = directory / f"{i:06d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        items.append((f"{i:06d}", path))
    return items


class TimedModel:
    """Wraps a DelgModel and accumulates the time spent in its calls."""

    def __init__(self, model):
        self.model, self.seconds, self.calls = model, 0.0, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.model(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="number of images (default 1000)")
    parser.add_argument("--size", type=int, default=512, help="longest image side (default 512)")
    parser.add_argument("--style", choices=("tf1", "tf2"), default="tf1", help="SavedModel style")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    parser.add_argument("--max-image-size", type=int, default=None, help="extract.max_image_size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import pandas as pd
    import tensorflow as tf

    from landmark_retrieval.backends import make_backend
    from landmark_retrieval.config import ExtractConfig
    from landmark_retrieval.dataset import Dataset
    from landmark_retrieval.extract import extract_split
    from landmark_retrieval.images import iter_images
    from landmark_retrieval.testing import export_test_model

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_delg_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        model_dir = export_test_model(tmp / "model", style=args.style, seed=args.seed)
        t_export = time.perf_counter() - t0
        (tmp / "images").mkdir()
        t0 = time.perf_counter()
        items = write_images(tmp / "images", args.images, args.size, args.seed)
        t_write = time.perf_counter() - t0
        print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; model exported in {t_export:.1f} s "
              f"({args.style}); {args.images} JPEGs of {args.size} px written in {t_write:.1f} s",
              flush=True)

        conf = ExtractConfig(backend="delg", model_path=str(model_dir), num_workers=args.workers,
                             max_image_size=args.max_image_size)
        backend = make_backend(conf)
        timed = TimedModel(backend.model)
        backend.model = timed
        warm = next(iter_images(items[:1], num_workers=1))[1]
        backend.extract(warm)  # first call builds/traces the function
        timed.seconds, timed.calls = 0.0, 0
        rss_before = peak_rss_mb()

        # 1. the extract step as the pipeline runs it: decoding threads, model, HDF5 shards
        ids = [image_id for image_id, _ in items]
        dataset = Dataset(root=tmp, train=pd.DataFrame({"id": [], "landmark_id": []}), test_ids=ids,
                          _test_paths=dict(items))
        t0 = time.perf_counter()
        store = extract_split(backend, dataset, "test", tmp / "features", num_workers=args.workers)
        wall = time.perf_counter() - t0
        n_feats = sum(len(store.local(i)) for i in store.local_ids)
        failures = len(store.failures)
        store.close()
        outside = 1.0 - timed.seconds / wall
        disk = sum(p.stat().st_size for p in (tmp / "features").glob("*.h5")) / 1e6
        rows.append(("full: extract step (HDF5 shards)", args.images, wall, peak_rss_mb(),
                     f"{outside:.0%} of wall time outside the model call; {disk:.0f} MB on disk"))
        rows.append(("  of which model calls", timed.calls, timed.seconds, None,
                     f"{n_feats / max(1, args.images):.0f} local features/image, {failures} failures"))

        # 2. decoding only
        t0 = time.perf_counter()
        cache = []
        for _, image, _ in iter_images(items, num_workers=args.workers):
            if len(cache) < 64:
                cache.append(image)
        rows.append((f"decode only ({args.workers} threads)", args.images,
                     time.perf_counter() - t0, peak_rss_mb(), ""))

        # 3. model call only
        model = timed.model
        t0 = time.perf_counter()
        for i in range(args.images):
            model(cache[i % len(cache)], backend.scales, conf.delg.score_threshold,
                  conf.delg.max_keypoints)
        rows.append(("model call only", args.images, time.perf_counter() - t0, peak_rss_mb(),
                     f"cache of {len(cache)} decoded images"))

    print(f"\npeak RSS after loading the model: {rss_before:.0f} MB")
    print(f"{'phase':34s} {'images':>7s} {'wall s':>8s} {'img/s':>8s} {'ms/img':>8s} "
          f"{'peak RSS MB':>12s}  notes")
    for name, n, seconds, rss, note in rows:
        rss_text = f"{rss:12.0f}" if rss is not None else " " * 12
        print(f"{name:34s} {n:7d} {seconds:8.2f} {n / seconds:8.1f} {1000 * seconds / n:8.1f} "
              f"{rss_text}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
