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

and reports images/second (medians of repeats), the share of the full-extraction wall time spent
outside the model call (decoding waits, resizing, post-processing, HDF5 writes) and the peak RSS,
in ``benchmarks/results/delg_extract.json``.

The test network is ~100x cheaper than ResNet-50 DELG, so the numbers measure the pipeline
overhead around the model rather than DELG itself.

Usage::

    python benchmarks/bench_delg_extract.py [--quick] [--images 500] [--size 512] [--style tf1]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from suite import machine_info, set_patience, wait_for_idle, write_result  # noqa: E402


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
    parser.add_argument("--quick", action="store_true", help="40 images of 256 px, one repeat")
    parser.add_argument("--images", type=int, help="number of images (default 500; --quick 40)")
    parser.add_argument("--size", type=int, help="longest image side (default 512; --quick 256)")
    parser.add_argument("--style", choices=("tf1", "tf2"), default="tf1", help="SavedModel style")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    parser.add_argument("--max-image-size", type=int, default=None, help="extract.max_image_size")
    parser.add_argument("--repeats", type=int, help="repeats of each phase (default 3; --quick 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON file (default benchmarks/results/delg_extract.json)")
    args = parser.parse_args(argv)
    n_images = args.images or (40 if args.quick else 500)
    size = args.size or (256 if args.quick else 512)
    repeats = args.repeats or (1 if args.quick else 3)
    set_patience(10 if args.quick else 300)
    started = machine_info()

    import pandas as pd
    import tensorflow as tf

    from landmark_retrieval.backends import make_backend
    from landmark_retrieval.config import ExtractConfig
    from landmark_retrieval.dataset import Dataset
    from landmark_retrieval.extract import extract_split
    from landmark_retrieval.images import iter_images
    from landmark_retrieval.progress import set_progress
    from landmark_retrieval.testing import export_test_model

    set_progress(False)
    phases = {"extract": [], "model_share": [], "decode": [], "model": []}
    with tempfile.TemporaryDirectory(prefix="bench_delg_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        model_dir = export_test_model(tmp / "model", style=args.style, seed=args.seed)
        t_export = time.perf_counter() - t0
        (tmp / "images").mkdir()
        items = write_images(tmp / "images", n_images, size, args.seed)
        print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; model exported in {t_export:.1f} s "
              f"({args.style}); {n_images} JPEGs of {size} px", flush=True)

        conf = ExtractConfig(backend="delg", model_path=str(model_dir), num_workers=args.workers,
                             max_image_size=args.max_image_size)
        backend = make_backend(conf)
        timed = TimedModel(backend.model)
        backend.model = timed
        warm = next(iter_images(items[:1], num_workers=1))[1].array  # a DecodedImage
        backend.extract(warm)  # first call builds/traces the function
        rss_model = peak_rss_mb()
        ids = [image_id for image_id, _ in items]
        dataset = Dataset(root=tmp, train=pd.DataFrame({"id": [], "landmark_id": []}), test_ids=ids,
                          _test_paths=dict(items))
        n_feats = failures = 0
        disk = 0.0
        for r in range(repeats):
            wait_for_idle()  # the figures assume an otherwise idle machine
            # 1. the extract step as the pipeline runs it: decoding threads, model, HDF5 shards
            timed.seconds, timed.calls = 0.0, 0
            t0 = time.perf_counter()
            store = extract_split(backend, dataset, "test", tmp / f"features-{r}", num_workers=args.workers)
            wall = time.perf_counter() - t0
            n_feats = sum(len(store.local(i)) for i in store.local_ids)
            failures = len(store.failures)
            store.close()
            disk = sum(p.stat().st_size for p in (tmp / f"features-{r}").glob("*.h5")) / 1e6
            phases["extract"].append(wall)
            phases["model_share"].append(timed.seconds / wall)
            # 2. decoding only
            t0 = time.perf_counter()
            cache = []
            for _, decoded, _ in iter_images(items, num_workers=args.workers):
                if len(cache) < 64:
                    cache.append(decoded.array)
            phases["decode"].append(time.perf_counter() - t0)
            # 3. model call only
            model = timed.model
            t0 = time.perf_counter()
            for i in range(n_images):
                model(cache[i % len(cache)], backend.scales, conf.delg.score_threshold, conf.delg.max_keypoints)
            phases["model"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in phases.items()}
    figures = {
        "images": n_images, "size": size, "style": args.style, "decode_threads": args.workers, "repeats": repeats,
        "tensorflow": tf.__version__,
        "extract_images_per_s": round(n_images / med["extract"], 1),
        "outside_model_share": round(1.0 - med["model_share"], 3),
        "decode_images_per_s": round(n_images / med["decode"], 1),
        "model_images_per_s": round(n_images / med["model"], 1),
        "local_features_per_image": round(n_feats / max(1, n_images), 1), "failures": failures,
        "disk_mb": round(disk, 1), "peak_rss_mb_after_model_load": round(rss_model),
        "peak_rss_mb": round(peak_rss_mb()),
        "seconds": {k: [round(x, 3) for x in v] for k, v in phases.items()},
    }
    rows = [
        (f"extract step ({n_images} JPEGs of {size} px, {args.workers} decoding threads, HDF5 shards)",
         f"{figures['extract_images_per_s']:.1f} images/s; {figures['outside_model_share']:.0%} of the time "
         "outside the model call"),
        ("decoding only; model call only", f"{figures['decode_images_per_s']:.0f} images/s; "
                                          f"{figures['model_images_per_s']:.1f} images/s"),
        ("peak RSS: model loaded; after all phases", f"{figures['peak_rss_mb_after_model_load']} MB; "
                                                     f"{figures['peak_rss_mb']} MB"),
    ]
    setup = ("DELG extraction with the project's small random-weight DELG test network (about 100x cheaper than "
             "ResNet-50 DELG, so this measures the pipeline around the model), deterministic textured JPEGs; "
             f"medians of {repeats} runs")
    write_result("delg_extract", setup, rows, figures, args.quick, args.out, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
