"""Small random-weight image-embedding networks, exported offline in every supported format.

Stand-ins for the models GLR solutions trained (EfficientNet/ResNeSt/ViT + ArcFace), to test the
``embedding`` and ``ensemble`` backends without downloading anything:

* :func:`build_embedding_network`: a Keras conv net (two 3x3 stride-2 ReLU convs, a 1x1
  projection to ``dim`` channels) ending in global average pooling (``head="gap"``, output
  (1, dim)) or returning its feature map (``head="map"``, output (1, h, w, dim));
  weights drawn from a seeded numpy generator, so a seed always gives the same network;
* :func:`mean_pixel_network`: no weights, the output is the mean of each input channel
  (the model input after the backend's preprocessing), for hand-computed tests;
* :func:`export_embedding_model`: the same network as a ``.keras`` file, a TF2 SavedModel
  (``model.export``: ``serving_default`` signature) and, when the ``onnx`` package is installed,
  an ONNX file built node by node with ``onnx.helper`` (NCHW input, the same weights), so all
  three give the same descriptor.

TensorFlow (and onnx) are imported only when a helper that needs them is called.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

FORMATS = ("keras", "savedmodel", "onnx")
HEADS = ("gap", "map")


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        import keras
    except ImportError:  # TensorFlow < 2.16: Keras 2 as tf.keras
        keras = tf.keras
    return keras


def embedding_weights(seed: int = 0, dim: int = 32, width: int = 8) -> Dict[str, np.ndarray]:
    """He-normal float32 weights of :func:`build_embedding_network` (kernels HWIO, biases small).

    Returns:
        ``{"conv1": (3, 3, 3, width), "bias1": (width,), "conv2": (3, 3, width, 2 * width),
        "bias2": (2 * width,), "proj": (1, 1, 2 * width, dim), "bias_proj": (dim,)}``.
    """
    rng = np.random.default_rng(seed)

    def conv(k: int, cin: int, cout: int) -> np.ndarray:
        return (rng.standard_normal((k, k, cin, cout)) * np.sqrt(2.0 / (k * k * cin))).astype(np.float32)

    def bias(n: int) -> np.ndarray:
        return (rng.standard_normal(n) * 0.05).astype(np.float32)

    return {"conv1": conv(3, 3, width), "bias1": bias(width), "conv2": conv(3, width, 2 * width),
            "bias2": bias(2 * width), "proj": conv(1, 2 * width, dim), "bias_proj": bias(dim)}


def build_embedding_network(seed: int = 0, dim: int = 32, width: int = 8, input_size: Optional[int] = None,
                            head: str = "gap"):
    """A small Keras embedding network with seeded random weights (see the module docstring).

    Args:
        seed: weight seed.
        dim: embedding size (channels of the last layer).
        width: channels of the first conv (the second has twice as many).
        input_size: a fixed square input side, or None for any size.
        head: ``gap`` (output (1, dim)) or ``map`` (output (1, h, w, dim), h = ceil(H / 4)).

    Returns:
        A ``keras.Model`` taking float32 (1, H, W, 3) NHWC input.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.Conv2D(dim, 1, name="proj")(x)
    if head == "gap":
        x = layers.GlobalAveragePooling2D(name="embedding")(x)
    model = keras.Model(inputs, x, name=f"embedding_{head}")
    w = embedding_weights(seed, dim, width)
    model.get_layer("conv1").set_weights([w["conv1"], w["bias1"]])
    model.get_layer("conv2").set_weights([w["conv2"], w["bias2"]])
    model.get_layer("proj").set_weights([w["proj"], w["bias_proj"]])
    return model


def mean_pixel_network(input_size: Optional[int] = None):
    """A Keras model without weights whose output (1, 3) is the mean of each input channel."""
    keras = _keras()
    inputs = keras.Input((input_size, input_size, 3), name="image")
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="mean")(inputs), name="mean_pixel")


def onnx_available() -> bool:
    """Whether the ``onnx`` package (to build ONNX files) is importable."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx_embedding(path: Union[str, Path], seed: int = 0, dim: int = 32, width: int = 8,
                          input_size: Optional[int] = None, head: str = "gap") -> Path:
    """:func:`build_embedding_network` as an ONNX file (opset 13), built with ``onnx.helper``.

    The input ``image`` is float32 NCHW (1, 3, H, W); the output ``embedding`` is (1, dim)
    (``gap``) or the map ``features`` (1, dim, h, w) (``map``). Convolutions use
    ``auto_pad=SAME_UPPER``, which pads like Keras' ``padding="same"``.

    Raises:
        ImportError: the ``onnx`` package is not installed (``pip install onnx``).
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = embedding_weights(seed, dim, width)
    inits = [numpy_helper.from_array(np.ascontiguousarray(w[k].transpose(3, 2, 0, 1)), k)  # HWIO -> OIHW
             for k in ("conv1", "conv2", "proj")]
    inits += [numpy_helper.from_array(w[k], k) for k in ("bias1", "bias2", "bias_proj")]
    nodes = [
        helper.make_node("Conv", ["image", "conv1", "bias1"], ["c1"], strides=[2, 2], auto_pad="SAME_UPPER",
                         kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2", "bias2"], ["c2"], strides=[2, 2], auto_pad="SAME_UPPER",
                         kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"]),
    ]
    side = input_size if input_size else None
    size_h, size_w = (side, side) if side else ("height", "width")
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size_h, size_w])
    if head == "gap":
        nodes += [helper.make_node("Conv", ["r2", "proj", "bias_proj"], ["features"], kernel_shape=[1, 1]),
                  helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
                  helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1)]
        output = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, dim])
    else:
        nodes.append(helper.make_node("Conv", ["r2", "proj", "bias_proj"], ["features"], kernel_shape=[1, 1]))
        output = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, dim, None, None])
    graph = helper.make_graph(nodes, f"embedding_{head}", [image], [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="landmark_retrieval.testing")
    model.ir_version = 8  # readable by every ONNX Runtime since 1.10
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def export_embedding_model(directory: Union[str, Path], seed: int = 0, dim: int = 32, width: int = 8,
                           input_size: Optional[int] = None, head: str = "gap",
                           formats: Sequence[str] = ("keras", "savedmodel")) -> Dict[str, Path]:
    """Export the same random-weight network in several formats.

    Args:
        directory: output folder (created).
        seed, dim, width, input_size, head: see :func:`build_embedding_network`.
        formats: any of ``keras`` (``DIR/model.keras``), ``savedmodel`` (``DIR/saved_model/``,
            ``serving_default`` signature) and ``onnx`` (``DIR/model.onnx``, needs ``onnx``).

    Returns:
        ``{format: path}``.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; choose from {FORMATS}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out: Dict[str, Path] = {}
    if "keras" in formats or "savedmodel" in formats:
        model = build_embedding_network(seed, dim, width, input_size, head)
        if "keras" in formats:
            out["keras"] = directory / "model.keras"
            model.save(out["keras"])
        if "savedmodel" in formats:
            out["savedmodel"] = directory / "saved_model"
            model.export(str(out["savedmodel"]), verbose=False)
    if "onnx" in formats:
        out["onnx"] = export_onnx_embedding(directory / "model.onnx", seed, dim, width, input_size, head)
    return out


