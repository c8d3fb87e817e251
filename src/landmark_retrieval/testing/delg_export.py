"""A tiny DELG-architecture network exported with the official DELG SavedModel interface.

The real DELG model (ResNet-50, ~100 MB) cannot be downloaded in tests, so this module builds a
small network with the same structure and exports it in the two styles found in practice:

``style="tf1"``
    A TF1 graph (TF1 control flow) written with ``tf.compat.v1.saved_model.Builder`` (like the
    Kaggle ``delg-saved-models/local_and_global`` model). ``tf.saved_model.load(dir)`` returns an object
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

``backbone="resnet50"`` (benchmarks only: too slow for tests) exports a network of the real
model's size and cost instead: the architecture and random initial weights of Keras
``ResNet50(weights=None, include_top=False)`` (nothing is downloaded) with DELG's
``block3_strides`` layout (1x1/2 max-pool after conv4, conv5 at stride 1, overall stride 32), the
local head on the pooled conv4 map (1024 channels: 128-D autoencoder, attention 1x1 conv 512 + BN
+ ReLU, 1x1 conv to 1, softplus) and GeM + 2048-D whitening FC on conv5; the official receptive
boxes (rf = 291, stride = 32, pad = 145). Batch norms are folded into the preceding convolutions
(inference graphs do the same), and every convolution is rescaled on a calibration image so that
the random network's activations neither vanish nor explode (unit standard deviation, residual
branches 0.5), before the attention calibration above. About 25 M weights (~110 MB on disk).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional, Union

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
    _calibrate_attention(_tf(), w, ARCHS["tiny"], seed, size=256)
    return w


def _calibrate_attention(tf, w: Dict[str, np.ndarray], arch: "_Arch", seed: int, size: int) -> None:
    """Rescale the last attention layer so that its logits have mean/std ``_ATT_MEAN``/``_ATT_STD``
    on a textured ``size`` x ``size`` calibration image (eager TF, scale 1); edits ``w``."""
    calib = textured_image(size, size, seed=10_000 + seed)
    x = (tf.cast(calib, tf.float32)[None] - 128.0) / 128.0
    c4_map, _ = arch.backbone(tf, w, x, need_conv5=False)
    _, _, logits = _local_head(tf, w, c4_map)
    logits = logits.numpy().ravel().astype(np.float64)
    a = _ATT_STD / max(float(logits.std()), 1e-6)
    b = _ATT_MEAN - a * float(logits.mean())
    w["att_w2"] = (w["att_w2"] * a).astype(np.float32)
    w["att_b2"] = np.asarray([b], np.float32)


#: ResNet-50 stages: (Keras name, residual blocks, stride of the first block); conv5 runs at
#: stride 1 after the 1x1/2 max-pool of DELG's ``block3_strides``
_R50_STAGES = (("conv2", 3, 1), ("conv3", 4, 2), ("conv4", 6, 2), ("conv5", 3, 1))
R50_RF, R50_STRIDE, R50_PAD = 291.0, 32.0, 145.0  # official DELG receptive boxes (block3_strides)
R50_C4, R50_C5, R50_ATT_HIDDEN = 1024, 2048, 512


def make_resnet50_weights(seed: int = 0, global_dim: int = 2048) -> Dict[str, np.ndarray]:
    """Deterministic float32 weights of the ResNet-50-sized DELG network, calibrated.

    The backbone's shapes and random initial weights come from Keras
    ``ResNet50(weights=None, include_top=False)`` (Keras seeded with ``seed``; nothing is
    downloaded); each batch norm (inference form) is folded into its convolution, then the
    convolutions are rescaled on a calibration image (see the module docstring). The heads are
    He-normal from ``numpy.random.default_rng(seed)``.

    Returns:
        ``{name: array}``: ``<keras conv name>_w`` (HWIO) / ``_b`` per convolution, plus the head
        weights of :func:`make_weights` (``ae_*``, ``att_*``, ``embed_*``).
    """
    tf = _tf()
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.applications.ResNet50(weights=None, include_top=False)
    w: Dict[str, np.ndarray] = {}
    for layer in model.layers:
        if not layer.name.endswith("_conv"):
            continue
        kernel, bias = (np.asarray(v, np.float32) for v in layer.get_weights())
        gamma, beta, mean, var = (np.asarray(v, np.float64) for v in
                                  model.get_layer(layer.name[:-5] + "_bn").get_weights())
        eps = model.get_layer(layer.name[:-5] + "_bn").epsilon
        scale = gamma / np.sqrt(var + eps)
        name = layer.name[:-5]
        w[f"{name}_w"] = (kernel * scale).astype(np.float32)
        w[f"{name}_b"] = ((bias - mean) * scale + beta).astype(np.float32)
    del model
    keras.backend.clear_session()
    rng = np.random.default_rng(seed)

    def conv(cin: int, cout: int, gain: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((1, 1, cin, cout)) * gain * np.sqrt(2.0 / cin)).astype(np.float32)

    w["ae_enc_w"], w["ae_enc_b"] = conv(R50_C4, LOCAL_DIM, 0.7), np.zeros(LOCAL_DIM, np.float32)
    w["ae_dec_w"], w["ae_dec_b"] = conv(LOCAL_DIM, R50_C4), np.zeros(R50_C4, np.float32)
    # attention: 1x1 conv 512 + batch norm (inference form with random statistics, folded) + ReLU
    bn_scale = rng.uniform(0.8, 1.2, R50_ATT_HIDDEN)
    w["att_w1"] = (conv(R50_C4, R50_ATT_HIDDEN) * bn_scale).astype(np.float32)
    w["att_b1"] = (rng.standard_normal(R50_ATT_HIDDEN) * 0.01).astype(np.float32)
    w["att_w2"], w["att_b2"] = conv(R50_ATT_HIDDEN, 1), np.zeros(1, np.float32)
    w["embed_weights"] = (rng.standard_normal((R50_C5, global_dim)) / np.sqrt(R50_C5)).astype(np.float32)
    w["embed_biases"] = (rng.standard_normal(global_dim) * 0.01).astype(np.float32)

    # Rescale every backbone convolution on a calibration image, in network order (eager TF).
    calib = textured_image(320, 320, seed=20_000 + seed)
    x = (tf.cast(calib, tf.float32)[None] - 128.0) / 128.0

    def normalise(name: str, out):
        std = max(float(tf.math.reduce_std(out)), 1e-12)
        target = 0.5 if name.endswith("_3") else 1.0  # residual branch ends: 0.5
        a = target / std
        w[f"{name}_w"] = (w[f"{name}_w"] * a).astype(np.float32)
        w[f"{name}_b"] = (w[f"{name}_b"] * a).astype(np.float32)
        return out * a

    _resnet50_backbone(tf, w, x, need_conv5=True, hook=normalise)
    _calibrate_attention(tf, w, ARCHS["resnet50"], seed, size=384)
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


def _resnet50_backbone(tf, w, x, need_conv5: bool = True, hook=None):
    """x: [1, H, W, 3] float32 -> (pooled conv4 [1, h32, w32, 1024], conv5 [1, h32, w32, 2048] or
    None). ``hook(name, output)`` (calibration) may replace each convolution's output."""

    def cv(y, name: str, stride: int = 1, relu: bool = True):
        out = _conv(tf, y, w[f"{name}_w"], stride) + w[f"{name}_b"]
        if hook is not None:
            out = hook(name, out)
        return tf.nn.relu(out) if relu else out

    y = cv(x, "conv1", 2)
    y = tf.nn.max_pool2d(y, ksize=3, strides=2, padding="SAME")
    c4 = None
    for stage, blocks, stride in _R50_STAGES:
        if stage == "conv5":
            c4 = y = tf.nn.max_pool2d(y, ksize=1, strides=2, padding="SAME")  # block3_strides
            if not need_conv5:
                return c4, None
        for b in range(1, blocks + 1):
            name, s = f"{stage}_block{b}", stride if b == 1 else 1
            shortcut = cv(y, f"{name}_0", s, relu=False) if b == 1 else y
            r = cv(y, f"{name}_1", s)
            r = cv(r, f"{name}_2")
            y = tf.nn.relu(shortcut + cv(r, f"{name}_3", relu=False))
    return c4, y


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


class _Arch(NamedTuple):
    """A backbone and the receptive boxes of its local-feature map."""

    backbone: Callable  # (tf, w, x [1,H,W,3], need_conv5) -> (local map, conv5 map or None)
    make_weights: Callable  # (seed, global_dim) -> {name: array}
    rf: float
    stride: float
    pad: float


#: backbone name (``export_test_model(backbone=...)``) -> architecture
ARCHS: Dict[str, _Arch] = {
    "tiny": _Arch(_backbone, make_weights, RF, STRIDE, PAD),
    "resnet50": _Arch(_resnet50_backbone, make_resnet50_weights, R50_RF, R50_STRIDE, R50_PAD),
}


def build_outputs(tf, w, image, scales, abs_thres=None, max_feature_num=None,
                  global_scales_ind=None, with_local: bool = True, with_global: bool = True,
                  global_dim: int = 2048, backbone: str = "tiny") -> Dict[str, object]:
    """Build the multi-scale DELG computation; returns the unnamed output tensors by name."""
    arch = ARCHS[backbone]
    img = tf.expand_dims((tf.cast(image, tf.float32) - 128.0) / 128.0, 0)
    hw = tf.cast(tf.shape(image)[0:2], tf.float32)
    offsets = tf.constant([-arch.pad, -arch.pad, -arch.pad + arch.rf - 1.0, -arch.pad + arch.rf - 1.0],
                          tf.float32)

    def body(i, boxes, feats, fscales, scores, globs):
        s = tf.gather(scales, i)
        size = tf.cast(tf.round(hw * s), tf.int32)
        x = tf.image.resize(img, size, method="bilinear")
        c4, c5 = arch.backbone(tf, w, x, need_conv5=with_global)
        if with_local:
            desc, att, _ = _local_head(tf, w, c4)
            h, wd = tf.shape(att)[1], tf.shape(att)[2]
            att = tf.reshape(att, [-1])
            desc = tf.reshape(desc, [-1, LOCAL_DIM])
            ys, xs = tf.meshgrid(tf.range(h), tf.range(wd), indexing="ij")
            ys = tf.cast(tf.reshape(ys, [-1]), tf.float32)
            xs = tf.cast(tf.reshape(xs, [-1]), tf.float32)
            grid = tf.stack([ys, xs, ys, xs], axis=1) * arch.stride + offsets
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


def _export_tf1(directory: Path, weights, with_local, with_global, with_gsi, global_dim, backbone) -> None:
    tf = _tf()
    v2_control_flow = tf.compat.v1.control_flow_v2_enabled()
    # TF1 control flow, as in a graph built with TF1 behaviour: the scale loop is made of
    # per-tensor ops, so ``prune`` runs only what the fetched outputs need (a global-only call
    # skips the local head, a local-only call skips conv5)
    tf.compat.v1.disable_control_flow_v2()
    try:
        _build_tf1(tf, directory, weights, with_local, with_global, with_gsi, global_dim, backbone)
    finally:
        if v2_control_flow:
            tf.compat.v1.enable_control_flow_v2()


def _build_tf1(tf, directory: Path, weights, with_local, with_global, with_gsi, global_dim, backbone) -> None:
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
            # initialised from placeholders: the weights go to variables/ only, not also into the
            # graph as constants (which would double the SavedModel's size)
            feeds = {k: v1.placeholder(tf.float32, v.shape, name=f"{k}_value") for k, v in weights.items()}
            w = {k: v1.Variable(feeds[k], name=k, trainable=False) for k in weights}
            out = build_outputs(tf, w, image, scales, abs_thres, max_num, gsi,
                                with_local, with_global, global_dim, backbone)
        named = {k: tf.identity(v, name=k) for k, v in out.items()}
        for k, t in named.items():  # the official names must be free
            assert t.name == f"{k}:0", t.name
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer(), {feeds[k]: v for k, v in weights.items()})
            builder = v1.saved_model.Builder(str(directory))
            builder.add_meta_graph_and_variables(sess, [tf.saved_model.SERVING])
            builder.save()


def _export_tf2(directory: Path, weights, with_local, with_global, with_gsi, global_dim, backbone) -> None:
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
                            with_local, with_global, global_dim, backbone)
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
    backbone: str = "tiny",
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
        backbone: ``"tiny"`` (the test network) or ``"resnet50"`` (the real model's size and
            cost, for benchmarks: ~1 s per 512 px image on 2 cores, ~110 MB; see the module
            docstring).

    Returns:
        The SavedModel directory.
    """
    if style not in ("tf1", "tf2"):
        raise ValueError(f"style must be 'tf1' or 'tf2', got {style!r}")
    if not (with_local or with_global):
        raise ValueError("export at least one of the local and global heads")
    if backbone not in ARCHS:
        raise ValueError(f"backbone must be one of {', '.join(ARCHS)}, got {backbone!r}")
    if with_global_scales_ind is None:
        with_global_scales_ind = style == "tf2"
    directory = Path(directory)
    if (directory / "saved_model.pb").exists():
        raise FileExistsError(f"{directory} already holds a SavedModel")
    directory.parent.mkdir(parents=True, exist_ok=True)
    weights = ARCHS[backbone].make_weights(seed, global_dim)
    exporter = _export_tf1 if style == "tf1" else _export_tf2
    exporter(directory, weights, with_local, with_global, bool(with_global_scales_ind), global_dim, backbone)
    return directory
