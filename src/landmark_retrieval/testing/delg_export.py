"""A tiny DELG-architecture network exported with the official DELG SavedModel interface.

The real DELG model (ResNet-50, ~100 MB) cannot be downloaded in tests, so this module builds a
small network with the same structure and exports it in the two styles found in practice:

``style="tf1"``
    A TF1 graph written with ``tf.compat.v1.saved_model.Builder`` (like the Kaggle
    ``delg-saved-models/local_and_global`` model). ``tf.saved_model.load(dir)`` returns an object
    with ``.prune``; the tensors are named ``input_image``, ``input_scales``, ``input_abs_thres``,
    ``input_max_feature_num`` (optionally ``input_global_scales_ind``) and ``boxes``, ``features``,
    ``scales``, ``scores``, ``global_descriptors``. No signature is written (the Kaggle model is
    used through ``prune`` only).
``style="tf2"``
    A ``tf.Module`` saved with ``tf.saved_model.save`` whose ``serving_default`` signature takes
    ``input_image``, ``input_scales``, ``input_max_feature_num``, ``input_abs_thres`` (and
    ``input_global_scales_ind``) and returns a dict with the five outputs (like
    ``export_local_and_global_model.py``).

Both styles are built from the same weights and the same graph-building function, so they give
identical outputs for the same seed.

Network (all raw TF ops, no Keras):

* preprocessing in the graph: ``(float(uint8) - 128) / 128``; per scale, bilinear resize to
  ``round([H, W] * scale)``;
* backbone: 3x3/2 conv stem (8 ch) + 2x2/2 max-pool, then residual blocks (3x3/2 + 3x3, 1x1/2
  shortcut) with 16, 32 and 64 channels; the 32-channel map has stride 16 ("conv4", local head)
  and the 64-channel map stride 32 ("conv5", global head);
* global head: GeM pooling (p = 3) + whitening FC with bias (``global_dim`` outputs, default 2048);
  one row per scale, not normalised;
* local head on conv4: autoencoder (1x1 conv to 128-D descriptors, 1x1 conv + ReLU back to 32
  channels) and attention on the re-expanded map (1x1 conv + ReLU, 1x1 conv to 1, softplus);
* receptive boxes ``stride * [y, x, y, x] + [-pad, -pad, -pad + rf - 1, -pad + rf - 1]`` divided
  by the scale (``[ymin, xmin, ymax, xmax]`` in original-image pixels, rf = 77, stride = 16,
  pad = 38, the receptive field of this backbone); locations with attention >= ``abs_thres`` are
  kept over all scales, then the ``max_feature_num`` best by attention (NMS with IoU 1.0).

Attention calibration: the last attention layer is rescaled at export time so that, on a
textured calibration image at scale 1, the attention logits have mean 160 and standard deviation 50.
The Kaggle default threshold (175) therefore keeps roughly a third of the locations of a textured
image (a few hundred to 1000 features for a 512 px image at the three baseline scales). Tests that
need an exact count pass explicit thresholds (e.g. 0.0 keeps every location).

Speed: about 20-60 ms per 512 px image at the three baseline scales on 2 CPU cores.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

#: receptive field, stride and padding of a conv4 location (see the module docstring)
RF, STRIDE, PAD = 77.0, 16.0, 38.0
LOCAL_DIM = 128
GEM_POWER = 3.0
_CH_STEM, _CH_BLOCKS = 8, (16, 32, 64)  # block 2 output = conv4 (stride 16), block 3 = conv5
_ATT_HIDDEN = 16
_ATT_MEAN, _ATT_STD = 160.0, 50.0

OUTPUT_NAMES = ("boxes", "features", "scales", "scores", "global_descriptors")


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def textured_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic, textured RGB uint8 image (H, W, 3): gratings, rectangles and noise.

    Args:
        height, width: image size in pixels.
        seed: random seed; the same seed always gives the same image.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.full((height, width, 3), 110.0, np.float32)
    for _ in range(5):  # oriented gratings of random colour
        theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.02, 0.25), rng.uniform(0, 2 * np.pi)
        wave = np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
        img += wave[..., None] * rng.uniform(-30, 30, 3).astype(np.float32)
    for _ in range(12):  # "windows": flat rectangles
        h0, w0 = rng.integers(0, max(1, height - 4)), rng.integers(0, max(1, width - 4))
        hh, ww = rng.integers(3, max(4, height // 4)), rng.integers(3, max(4, width // 4))
        img[h0:h0 + hh, w0:w0 + ww] = rng.uniform(0, 255, 3)
    img += rng.normal(0.0, 8.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_weights(seed: int = 0, global_dim: int = 2048) -> Dict[str, np.ndarray]:
    """Deterministic float32 weights (He-normal convs) of the test network, attention calibrated.

    Returns:
        ``{name: array}``; conv kernels are HWIO.
    """
    rng = np.random.default_rng(seed)

    def conv(k: int, cin: int, cout: int, gain: float = 1.0) -> np.ndarray:
        std = gain * np.sqrt(2.0 / (k * k * cin))
        return (rng.standard_normal((k, k, cin, cout)) * std).astype(np.float32)

    def bias(n: int) -> np.ndarray:
        return (rng.standard_normal(n) * 0.01).astype(np.float32)

    w: Dict[str, np.ndarray] = {"stem_w": conv(3, 3, _CH_STEM), "stem_b": bias(_CH_STEM)}
    cin = _CH_STEM
    for i, cout in enumerate(_CH_BLOCKS, start=1):
        w[f"block{i}_conv1"] = conv(3, cin, cout)
        w[f"block{i}_bias1"] = bias(cout)
        w[f"block{i}_conv2"] = conv(3, cout, cout, gain=0.5)
        w[f"block{i}_bias2"] = bias(cout)
        w[f"block{i}_shortcut"] = conv(1, cin, cout)
        cin = cout
    c4, c5 = _CH_BLOCKS[1], _CH_BLOCKS[2]
    w["ae_enc_w"] = conv(1, c4, LOCAL_DIM, gain=0.7)
    w["ae_enc_b"] = bias(LOCAL_DIM)
    w["ae_dec_w"] = conv(1, LOCAL_DIM, c4)
    w["ae_dec_b"] = bias(c4)
    w["att_w1"] = conv(1, c4, _ATT_HIDDEN)
    w["att_b1"] = bias(_ATT_HIDDEN)
    w["att_w2"] = conv(1, _ATT_HIDDEN, 1)
    w["att_b2"] = np.zeros(1, np.float32)
    w["embed_weights"] = (rng.standard_normal((c5, global_dim)) / np.sqrt(c5)).astype(np.float32)
    w["embed_biases"] = bias(global_dim)
    # Calibrate the attention logits on a textured image (eager TF, scale 1).
    tf = _tf()
    calib = textured_image(256, 256, seed=10_000 + seed)
    x = (tf.cast(calib, tf.float32)[None] - 128.0) / 128.0
    c4_map, _ = _backbone(tf, w, x, need_conv5=False)
    _, _, logits = _local_head(tf, w, c4_map)
    logits = logits.numpy().ravel().astype(np.float64)
    a = _ATT_STD / max(float(logits.std()), 1e-6)
    b = _ATT_MEAN - a * float(logits.mean())
    w["att_w2"] = (w["att_w2"] * a).astype(np.float32)
    w["att_b2"] = np.asarray([b], np.float32)
    return w


# ---------------------------------------------------------------------------------------------
# Graph building (shared by both export styles; ``w`` maps names to tensors/variables/arrays)


def _conv(tf, x, kernel, stride: int = 1):
    return tf.nn.conv2d(x, kernel, strides=stride, padding="SAME")


def _backbone(tf, w, x, need_conv5: bool = True):
    """x: [1, H, W, 3] float32 -> (conv4 [1, h16, w16, 32], conv5 [1, h32, w32, 64] or None)."""
    y = tf.nn.relu(_conv(tf, x, w["stem_w"], 2) + w["stem_b"])
    y = tf.nn.max_pool2d(y, ksize=2, strides=2, padding="SAME")
    maps = []
    for i in range(1, len(_CH_BLOCKS) + 1):
        if i == len(_CH_BLOCKS) and not need_conv5:
            maps.append(None)
            break
        r = tf.nn.relu(_conv(tf, y, w[f"block{i}_conv1"], 2) + w[f"block{i}_bias1"])
        r = _conv(tf, r, w[f"block{i}_conv2"]) + w[f"block{i}_bias2"]
        y = tf.nn.relu(_conv(tf, y, w[f"block{i}_shortcut"], 2) + r)
        maps.append(y)
    return maps[1], maps[2]


def _local_head(tf, w, c4):
    """conv4 map -> (descriptors [1,h,w,128], attention [1,h,w,1], attention logits)."""
    desc = _conv(tf, c4, w["ae_enc_w"]) + w["ae_enc_b"]
    up = tf.nn.relu(_conv(tf, desc, w["ae_dec_w"]) + w["ae_dec_b"])
    hidden = tf.nn.relu(_conv(tf, up, w["att_w1"]) + w["att_b1"])
    logits = _conv(tf, hidden, w["att_w2"]) + w["att_b2"]
    return desc, tf.nn.softplus(logits), logits


def _global_head(tf, w, c5):
    """conv5 map -> [1, D] (GeM p=3, then whitening FC with bias; not normalised)."""
    x = tf.maximum(c5, 1e-6)
    gem = tf.pow(tf.reduce_mean(tf.pow(x, GEM_POWER), axis=[1, 2]), 1.0 / GEM_POWER)
    return tf.matmul(gem, w["embed_weights"]) + w["embed_biases"]


def build_outputs(tf, w, image, scales, abs_thres=None, max_feature_num=None,
                  global_scales_ind=None, with_local: bool = True, with_global: bool = True,
                  global_dim: int = 2048) -> Dict[str, object]:
    """Build the multi-scale DELG computation; returns the unnamed output tensors by name."""
    img = tf.expand_dims((tf.cast(image, tf.float32) - 128.0) / 128.0, 0)
    hw = tf.cast(tf.shape(image)[0:2], tf.float32)
    offsets = tf.constant([-PAD, -PAD, -PAD + RF - 1.0, -PAD + RF - 1.0], tf.float32)

    def body(i, boxes, feats, fscales, scores, globs):
        s = tf.gather(scales, i)
        size = tf.cast(tf.round(hw * s), tf.int32)
        x = tf.image.resize(img, size, method="bilinear")
        c4, c5 = _backbone(tf, w, x, need_conv5=with_global)
        if with_local:
            desc, att, _ = _local_head(tf, w, c4)
            h, wd = tf.shape(att)[1], tf.shape(att)[2]
            att = tf.reshape(att, [-1])
            desc = tf.reshape(desc, [-1, LOCAL_DIM])
            ys, xs = tf.meshgrid(tf.range(h), tf.range(wd), indexing="ij")
            ys = tf.cast(tf.reshape(ys, [-1]), tf.float32)
            xs = tf.cast(tf.reshape(xs, [-1]), tf.float32)
            grid = tf.stack([ys, xs, ys, xs], axis=1) * STRIDE + offsets
            keep = att >= abs_thres
            boxes = tf.concat([boxes, tf.boolean_mask(grid / s, keep)], 0)
            feats = tf.concat([feats, tf.boolean_mask(desc, keep)], 0)
            kept_att = tf.boolean_mask(att, keep)
            scores = tf.concat([scores, kept_att], 0)
            fscales = tf.concat([fscales, tf.ones_like(kept_att) / s], 0)
        if with_global:
            globs = tf.concat([globs, _global_head(tf, w, c5)], 0)
        return i + 1, boxes, feats, fscales, scores, globs

    init = (tf.constant(0), tf.zeros([0, 4]), tf.zeros([0, LOCAL_DIM]), tf.zeros([0]),
            tf.zeros([0]), tf.zeros([0, global_dim]))
    invariants = (tf.TensorShape([]), tf.TensorShape([None, 4]), tf.TensorShape([None, LOCAL_DIM]),
                  tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape([None, global_dim]))
    _, boxes, feats, fscales, scores, globs = tf.while_loop(
        lambda i, *_: i < tf.size(scales), body, init, shape_invariants=invariants)
    out = {}
    if with_local:
        k = tf.maximum(tf.minimum(max_feature_num, tf.size(scores)), 0)
        top = tf.math.top_k(scores, k=k, sorted=True).indices
        out["boxes"] = tf.gather(boxes, top)
        out["features"] = tf.gather(feats, top)
        out["scales"] = tf.gather(fscales, top)
        out["scores"] = tf.expand_dims(tf.gather(scores, top), 1)
    if with_global:
        out["global_descriptors"] = (
            globs if global_scales_ind is None else tf.gather(globs, global_scales_ind))
    return out


# ---------------------------------------------------------------------------------------------
# Exports


def _export_tf1(directory: Path, weights, with_local, with_global, with_gsi, global_dim) -> None:
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        v1 = tf.compat.v1
        image = v1.placeholder(tf.uint8, [None, None, 3], name="input_image")
        scales = v1.placeholder(tf.float32, [None], name="input_scales")
        abs_thres = max_num = gsi = None
        if with_local:
            abs_thres = v1.placeholder(tf.float32, [], name="input_abs_thres")
            max_num = v1.placeholder(tf.int32, [], name="input_max_feature_num")
        if with_global and with_gsi:
            gsi = v1.placeholder(tf.int32, [None], name="input_global_scales_ind")
        with tf.name_scope("delg"):
            w = {k: tf.Variable(v, name=k, trainable=False) for k, v in weights.items()}
            out = build_outputs(tf, w, image, scales, abs_thres, max_num, gsi,
                                with_local, with_global, global_dim)
        named = {k: tf.identity(v, name=k) for k, v in out.items()}
        for k, t in named.items():  # the official names must be free
            assert t.name == f"{k}:0", t.name
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(directory))
            builder.add_meta_graph_and_variables(sess, [tf.saved_model.SERVING])
            builder.save()


def _export_tf2(directory: Path, weights, with_local, with_global, with_gsi, global_dim) -> None:
    tf = _tf()
    module = tf.Module()
    module.weights = {k: tf.Variable(v, name=k, trainable=False) for k, v in weights.items()}
    w = module.weights
    specs = [tf.TensorSpec([None, None, 3], tf.uint8, "input_image"),
             tf.TensorSpec([None], tf.float32, "input_scales"),
             tf.TensorSpec((), tf.int32, "input_max_feature_num"),
             tf.TensorSpec((), tf.float32, "input_abs_thres")]

    def run(image, scales, max_num, thres, gsi):
        out = build_outputs(tf, w, image, scales, thres, max_num, gsi,
                            with_local, with_global, global_dim)
        return {k: tf.identity(v, name=k) for k, v in out.items()}

    if with_gsi:
        @tf.function(input_signature=specs + [tf.TensorSpec([None], tf.int32, "input_global_scales_ind")])
        def extract(input_image, input_scales, input_max_feature_num, input_abs_thres,
                    input_global_scales_ind):
            return run(input_image, input_scales, input_max_feature_num, input_abs_thres,
                       input_global_scales_ind)
    else:
        @tf.function(input_signature=specs)
        def extract(input_image, input_scales, input_max_feature_num, input_abs_thres):
            return run(input_image, input_scales, input_max_feature_num, input_abs_thres, None)

    module.ExtractFeatures = extract
    tf.saved_model.save(module, str(directory), signatures={"serving_default": extract})


def export_test_model(
    directory: Union[str, Path],
    style: str = "tf1",
    seed: int = 0,
    global_dim: int = 2048,
    with_local: bool = True,
    with_global: bool = True,
    with_global_scales_ind: Optional[bool] = None,
) -> Path:
    """Export the small DELG-architecture test network as a SavedModel.

    Args:
        directory: output directory (created; must not contain a SavedModel yet).
        style: ``"tf1"`` (Builder graph, used through ``prune``) or ``"tf2"``
            (``tf.saved_model.save``, used through ``signatures['serving_default']``).
        seed: weight seed; both styles give identical outputs for the same seed.
        global_dim: size of the global descriptor.
        with_local: export ``boxes``/``features``/``scales``/``scores`` (and the threshold and
            max-feature inputs).
        with_global: export ``global_descriptors``.
        with_global_scales_ind: add the ``input_global_scales_ind`` input. None = the usual
            layout of the style: False for ``tf1`` (like the Kaggle model), True for ``tf2``.

    Returns:
        The SavedModel directory.
    """
    if style not in ("tf1", "tf2"):
        raise ValueError(f"style must be 'tf1' or 'tf2', got {style!r}")
    if not (with_local or with_global):
        raise ValueError("export at least one of the local and global heads")
    if with_global_scales_ind is None:
        with_global_scales_ind = style == "tf2"
    directory = Path(directory)
    if (directory / "saved_model.pb").exists():
        raise FileExistsError(f"{directory} already holds a SavedModel")
    directory.parent.mkdir(parents=True, exist_ok=True)
    weights = make_weights(seed, global_dim)
    exporter = _export_tf1 if style == "tf1" else _export_tf2
    exporter(directory, weights, with_local, with_global, bool(with_global_scales_ind), global_dim)
    return directory
