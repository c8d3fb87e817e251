#!/usr/bin/env python
"""Benchmark the DELG extract step against the pure model time, with a realistic-cost model.

The model is the ResNet-50-sized random-weight DELG network with the official TF1 (``prune``)
interface (``export_test_model(..., backbone="resnet50")``, cached by ``delg_models.py`` outside
the repository; nothing is downloaded), or with ``--model tiny`` the small test network. N
deterministic textured JPEGs are written, then each repeat times

1. **extract step** as the pipeline runs it (``extract.extract_split``: decoding threads,
   ``DelgBackend.extract`` per image, HDF5 shards), with the time inside the model call, the
   main thread's waits for decoded images and its time in ``ShardWriter.add`` measured apart;
2. **pure model time**: the same images decoded beforehand (untimed), then only the model call
   the backend makes (both heads), summed.

The goal (issue "performance", item 6) is extract wall time <= 1.1 x pure model time, peak RSS
flat in the number of images (the process's current RSS is sampled at every model call, over
all repeats) and HDF5 writes off the critical path. Then the cost per image of the model call
with the global head only, the local head only and both (TF1 ``prune`` computes only what is
fetched) on the first images. Writes ``benchmarks/results/delg_extract.json``.

Usage::

    python benchmarks/bench_delg_extract.py [--quick] [--model resnet50|tiny] [--images 40] [--size 512]
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
from typing import Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from suite import (  # noqa: E402
    CONTENTION,
    MAX_OTHER_SHARE,
    cpu_snapshot,
    machine_info,
    other_cpu_share,
    set_patience,
    wait_for_idle,
    write_result,
)

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4096 / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 1024.0 / 1024.0


def current_rss_mb() -> float:
    """Current resident memory of this process in MiB (``/proc/self/statm``; else the peak)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE_MB
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


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
    """Wraps a DelgModel: accumulates the time spent in its calls, samples the current RSS."""

    def __init__(self, model):
        self.model, self.seconds, self.calls = model, 0.0, 0
        self.rss: List[float] = []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.model(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            self.rss.append(current_rss_mb())


class Clock:
    """Seconds spent in instrumented calls: ``wait`` (main thread waiting for decoded images),
    ``write`` (main thread in the writer's calls), ``write_total`` (in ``ShardWriter.add`` and
    shard completion, whichever thread runs them)."""

    def __init__(self):
        self.wait = self.write = self.write_total = 0.0


def instrument(clock: Clock):
    """Patch the extraction loop's ``iter_images`` and writer classes to fill ``clock``."""
    import landmark_retrieval.backends.extraction as ex

    original_iter, original_writer = ex.iter_images, ex.ShardWriter
    background = getattr(ex, "BackgroundWriter", None)  # absent before writes moved off the main thread

    def timed_iter(*args, **kwargs):
        it = original_iter(*args, **kwargs)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                clock.wait += time.perf_counter() - t0
            yield item

    def timed_class(cls, fields):
        class Timed(cls):
            def add(self, *args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return super().add(*args, **kwargs)
                finally:
                    for f in fields:
                        setattr(clock, f, getattr(clock, f) + time.perf_counter() - t0)

            def __exit__(self, *exc):
                t0 = time.perf_counter()
                try:
                    return super().__exit__(*exc)
                finally:
                    for f in fields:
                        setattr(clock, f, getattr(clock, f) + time.perf_counter() - t0)

        return Timed

    ex.iter_images = timed_iter
    if background is None:
        ex.ShardWriter = timed_class(original_writer, ("write", "write_total"))
    else:
        ex.ShardWriter = timed_class(original_writer, ("write_total",))
        ex.BackgroundWriter = timed_class(background, ("write",))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 images of 256 px, one repeat")
    parser.add_argument("--model", choices=("resnet50", "tiny"), default="resnet50",
                        help="resnet50: the realistic-cost network (cached); tiny: the test network")
    parser.add_argument("--images", type=int, help="number of images (default 40; --quick 12)")
    parser.add_argument("--size", type=int, help="longest image side (default 512; --quick 256)")
    parser.add_argument("--style", choices=("tf1", "tf2"), default="tf1", help="SavedModel style")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    parser.add_argument("--max-image-size", type=int, default=None, help="extract.max_image_size")
    parser.add_argument("--repeats", type=int, help="repeats of each phase (default 3; --quick 1)")
    parser.add_argument("--split-images", type=int, help="images of the per-head cost (default 16; --quick 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON file (default benchmarks/results/delg_extract.json)")
    args = parser.parse_args(argv)
    n_images = args.images or (12 if args.quick else 40)
    size = args.size or (256 if args.quick else 512)
    repeats = args.repeats or (1 if args.quick else 3)
    n_split = min(n_images, args.split_images or (4 if args.quick else 16))
    set_patience(10 if args.quick else 300)
    started = machine_info()

    import pandas as pd
    import tensorflow as tf

    from landmark_retrieval.backends.extraction import extract_split
    from landmark_retrieval.backends.registry import make_backend
    from landmark_retrieval.config import ExtractConfig
    from landmark_retrieval.io.dataset import Dataset
    from landmark_retrieval.io.images import decode_image, iter_images
    from landmark_retrieval.io.progress import set_progress

    set_progress(False)
    clock = Clock()
    instrument(clock)
    phases: Dict[str, List[float]] = {"extract": [], "model": [], "ratio": [], "model_in_extract": [],
                                      "wait": [], "write": [], "write_total": []}
    rss_per_call: List[float] = []
    rss_end: List[float] = []  # RSS at the end of each repeat (same images again: flat when nothing accumulates)
    with tempfile.TemporaryDirectory(prefix="bench_delg_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        if args.model == "resnet50":
            from delg_models import realistic_delg_model

            model_dir = realistic_delg_model(args.style, seed=args.seed)
        else:
            from landmark_retrieval.testing import export_test_model

            model_dir = export_test_model(tmp / "model", style=args.style, seed=args.seed)
        t_export = time.perf_counter() - t0
        (tmp / "images").mkdir()
        items = write_images(tmp / "images", n_images, size, args.seed)
        print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; {args.model} model ({args.style}) ready in "
              f"{t_export:.1f} s; {n_images} JPEGs of {size} px", flush=True)

        conf = ExtractConfig(backend="delg", model_path=str(model_dir), num_workers=args.workers,
                             max_image_size=args.max_image_size)
        backend = make_backend(conf)
        timed = TimedModel(backend.model)
        backend.model = timed
        warm = decode_image(items[0][1]).array
        for local, global_ in ((True, True), (True, False), (False, True)):  # trace every pruned function
            backend.extract(warm, local=local, global_=global_)
        rss_model = current_rss_mb()
        ids = [image_id for image_id, _ in items]
        dataset = Dataset(root=tmp, train=pd.DataFrame({"id": [], "landmark_id": []}), test_ids=ids,
                          _test_paths=dict(items))
        n_feats = failures = 0
        disk = 0.0
        model = timed.model
        for r in range(repeats):
            wait_for_idle()  # the figures assume an otherwise idle machine
            snap = cpu_snapshot()
            # 1. the extract step as the pipeline runs it: decoding threads, model, HDF5 shards
            timed.seconds, timed.calls, timed.rss = 0.0, 0, []
            clock.wait = clock.write = clock.write_total = 0.0
            t0 = time.perf_counter()
            store = extract_split(backend, dataset, "test", tmp / f"features-{r}", num_workers=args.workers)
            wall = time.perf_counter() - t0
            rss_per_call += timed.rss
            rss_end.append(statistics.median(timed.rss[-10:]) if timed.rss else current_rss_mb())
            n_feats = sum(len(store.local(i)) for i in store.local_ids)
            failures = len(store.failures)
            store.close()
            disk = sum(p.stat().st_size for p in (tmp / f"features-{r}").glob("*.h5")) / 1e6
            phases["extract"].append(wall)
            phases["model_in_extract"].append(timed.seconds)
            phases["wait"].append(clock.wait)
            phases["write"].append(clock.write)
            phases["write_total"].append(clock.write_total)
            # 2. pure model time: the same images, decoded beforehand (untimed), model call only
            wait_for_idle()
            pure = 0.0
            for _, path in items:
                image = decode_image(path).array
                t0 = time.perf_counter()
                model(image, backend.scales, conf.delg.score_threshold, conf.delg.max_keypoints)
                pure += time.perf_counter() - t0
            phases["model"].append(pure)
            phases["ratio"].append(wall / pure)
            CONTENTION["runs"] += 1
            CONTENTION["contended_timings"] += (other_cpu_share(snap) or 0.0) >= MAX_OTHER_SHARE
        # 3. per-image cost of the model call by head (first n_split images, decoded beforehand)
        heads = {"both": (True, True), "global_only": (False, True), "local_only": (True, False)}
        head_ms: Dict[str, List[float]] = {k: [] for k in heads}
        images = [decode_image(path).array for _, path in items[:n_split]]
        wait_for_idle()
        for image in images:  # interleaved, so that contention hits every variant alike
            for name, (local, global_) in heads.items():
                t0 = time.perf_counter()
                model(image, backend.scales, conf.delg.score_threshold, conf.delg.max_keypoints,
                      fetch_local=local, fetch_global=global_)
                head_ms[name].append(1000.0 * (time.perf_counter() - t0))
        decode_t0 = time.perf_counter()
        for _ in iter_images(items, num_workers=args.workers):
            pass
        decode_s = time.perf_counter() - decode_t0
    med = {k: statistics.median(v) for k, v in phases.items()}
    tenth = max(1, len(rss_per_call) // 10)
    rss_early = statistics.median(rss_per_call[:tenth]) if rss_per_call else 0.0
    rss_late = statistics.median(rss_per_call[-tenth:]) if rss_per_call else 0.0
    head_med = {k: round(statistics.median(v), 1) for k, v in head_ms.items()}
    figures = {
        "model": args.model, "images": n_images, "size": size, "style": args.style, "decode_threads": args.workers,
        "repeats": repeats, "tensorflow": tf.__version__,
        "extract_over_model": round(med["ratio"], 3),
        "outside_model_share": round(1.0 - med["model_in_extract"] / med["extract"], 4),
        "extract_ms_per_image": round(1000 * med["extract"] / n_images, 1),
        "model_ms_per_image": round(1000 * med["model"] / n_images, 1),
        "model_ms_per_image_inside_extract": round(1000 * med["model_in_extract"] / n_images, 1),
        "main_thread_wait_for_decoding_ms_per_image": round(1000 * med["wait"] / n_images, 2),
        "main_thread_hdf5_write_ms_per_image": round(1000 * med["write"] / n_images, 2),
        "hdf5_write_ms_per_image_any_thread": round(1000 * med["write_total"] / n_images, 2),
        "decode_only_images_per_s": round(n_images / decode_s, 1),
        "model_ms_per_image_by_head": head_med, "head_images": n_split,
        "local_features_per_image": round(n_feats / max(1, n_images), 1), "failures": failures,
        "disk_mb": round(disk, 1),
        "rss_mb_model_loaded": round(rss_model),
        "rss_mb_first_tenth_of_calls": round(rss_early), "rss_mb_last_tenth_of_calls": round(rss_late),
        "rss_images_sampled": len(rss_per_call),
        "rss_mb_end_of_each_repeat": [round(x) for x in rss_end],
        "peak_rss_mb": round(peak_rss_mb()),
        "seconds": {k: [round(x, 3) for x in v] for k, v in phases.items()},
    }
    rows = [
        (f"extract step / pure model time ({args.model} DELG, {n_images} JPEGs of {size} px, 3 scales)",
         f"{figures['extract_over_model']:.3f}x ({figures['extract_ms_per_image']:.0f} vs "
         f"{figures['model_ms_per_image']:.0f} ms per image); {figures['outside_model_share']:.1%} of the extract "
         "step outside the model call (main thread: "
         f"{figures['main_thread_wait_for_decoding_ms_per_image']:.1f} ms waiting for decoding, "
         f"{figures['main_thread_hdf5_write_ms_per_image']:.1f} ms in HDF5 writes per image, of "
         f"{figures['hdf5_write_ms_per_image_any_thread']:.1f} ms written)"),
        ("model call per image: global head only; local only; both",
         f"{head_med['global_only']:.0f}; {head_med['local_only']:.0f}; {head_med['both']:.0f} ms"),
        (f"RSS over {len(rss_per_call)} extracted images: first tenth; last tenth; end of each repeat; peak",
         f"{figures['rss_mb_first_tenth_of_calls']} MB; {figures['rss_mb_last_tenth_of_calls']} MB; "
         f"{', '.join(map(str, figures['rss_mb_end_of_each_repeat']))} MB; {figures['peak_rss_mb']} MB"),
    ]
    what = ("the ResNet-50-sized random-weight DELG network (Keras ResNet50 architecture, DELG heads, official TF1 "
            "interface; the real model's cost)" if args.model == "resnet50" else
            "the project's small random-weight DELG test network (~100x cheaper than ResNet-50 DELG)")
    setup = (f"DELG extraction with {what}, deterministic textured JPEGs; the extract step (decoding threads, "
             f"model, HDF5 shards) against the model calls alone on the same images; medians of {repeats} runs")
    write_result("delg_extract", setup, rows, figures, args.quick, args.out, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
