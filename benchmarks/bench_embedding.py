#!/usr/bin/env python
"""Benchmark the embedding backend on a ResNet-50-sized Keras model (random weights, no download).

Builds ``keras.applications.ResNet50(weights=None, include_top=False)`` (23.6 M parameters, the
backbone of DELG and of many GLR solutions) for a fixed square input, saves it as a ``.keras``
file, loads it through the ``embedding`` backend (GeM pooling of the 2048-channel map, caffe
pixel scaling in BGR order as keras.applications.resnet50 expects) and times
``EmbeddingBackend.extract`` per image (resize to the square, scaling, one model call, pooling,
normalisation) on deterministic textured images of varying aspect, after warm-up calls. The
model call alone is timed on the same inputs for comparison (the rest is the backend's overhead).

Prints one JSON document: ms per image (median, mean, min) for the backend and for the model
call, images per second, the model's parameters and the load time.

Usage::

    python benchmarks/bench_embedding.py --size 512 --images 20
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="model input side in pixels (default 512)")
    parser.add_argument("--images", type=int, default=20, help="timed images (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument("--flip", action="store_true", help="also the flipped image (two model calls per image)")
    args = parser.parse_args()

    import tensorflow as tf

    try:
        import keras
    except ImportError:  # TensorFlow < 2.16
        keras = tf.keras

    from landmark_retrieval.backends.embedding_input import resize_for_model, scale_pixels, to_model_input
    from landmark_retrieval.backends.registry import make_backend
    from landmark_retrieval.presets import get_config
    from landmark_retrieval.testing.delg_export import textured_image

    keras.utils.set_random_seed(0)
    net = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(args.size, args.size, 3))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet50.keras"
        net.save(path)
        conf = get_config("embedding", {"extract": {"model_path": str(path), "embedding": {
            "resize": "resize", "scaling": "caffe", "channel_order": "BGR", "pooling": "gem", "flip": args.flip}}})
        start = time.perf_counter()
        backend = make_backend(conf.extract)
        load_s = time.perf_counter() - start

        rng = np.random.default_rng(0)
        images = []
        for i in range(args.images + args.warmup):
            h, w = (int(rng.integers(args.size * 3 // 4, args.size * 5 // 4)) for _ in range(2))
            images.append(textured_image(h, w, seed=i))
        for img in images[:args.warmup]:
            backend.extract(img)
        extract_ms = []
        for img in images[args.warmup:]:
            t = time.perf_counter()
            g = backend.extract(img).global_descriptor
            extract_ms.append((time.perf_counter() - t) * 1000)
            assert g is not None and g.shape == (2048,)
        inputs = []
        for img in images[args.warmup:]:
            x = resize_for_model(img, "resize", (args.size, args.size))
            inputs.append(to_model_input(scale_pixels(x, "caffe"), "BGR", "NHWC"))
        model_ms = []
        for x in inputs:
            t = time.perf_counter()
            backend.model(x)
            model_ms.append((time.perf_counter() - t) * 1000)

    def summary(values):
        return {"median": round(statistics.median(values), 1), "mean": round(statistics.mean(values), 1),
                "min": round(min(values), 1)}

    print(json.dumps({
        "model": "keras.applications.ResNet50(weights=None, include_top=False) + GeM",
        "parameters": int(net.count_params()),
        "input": f"{args.size}x{args.size}",
        "flip": args.flip,
        "images": args.images,
        "cpu_threads": os.cpu_count(),
        "tensorflow": tf.__version__,
        "load_s": round(load_s, 2),
        "extract_ms_per_image": summary(extract_ms),
        "model_call_ms": summary(model_ms),
        "images_per_s": round(1000.0 / statistics.mean(extract_ms), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
