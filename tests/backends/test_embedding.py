"""Embedding backend: preprocessing, pooling and averaging by hand, and the three model formats.

Preprocessing is checked with Python-callable "models" whose output is a known function of their
input (the mean pixel, a column, the input size), so every expected value is computed here by
hand. The format tests use the small random-weight network of
:mod:`landmark_retrieval.testing.embedding_export`, exported offline as .keras, SavedModel and ONNX.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest

from landmark_retrieval.backends.embedding import EmbeddingBackend, EmbeddingModelError
from landmark_retrieval.backends.embedding_input import pool_output, resize_for_model, scale_pixels, to_model_input
from landmark_retrieval.config import EmbeddingConfig, ExtractConfig
from landmark_retrieval.presets import get_config


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def backend(model: Callable, max_image_size=None, **embedding) -> EmbeddingBackend:
    """An embedding backend on a Python callable (no file, no TensorFlow)."""
    conf = ExtractConfig(backend="embedding", max_image_size=max_image_size, embedding=EmbeddingConfig(**embedding))
    return EmbeddingBackend(conf, model=model)


def solid(h: int, w: int, rgb) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[...] = np.asarray(rgb, np.uint8)
    return img


def mean_pixel(x: np.ndarray) -> np.ndarray:
    """NHWC input -> (1, 3) mean of each channel."""
    return x.mean(axis=(1, 2))


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    from landmark_retrieval.testing.delg_export import textured_image

    return textured_image(h, w, seed)


# ---------------------------------------------------------------------------------------------
# pure functions


def test_scale_pixels_by_hand():
    px = np.array([[[0, 128, 255]]], np.uint8)
    np.testing.assert_array_equal(scale_pixels(px, "0-255"), [[[0.0, 128.0, 255.0]]])
    np.testing.assert_allclose(scale_pixels(px, "0-1"), [[[0.0, 128 / 255, 1.0]]], rtol=1e-6)
    np.testing.assert_allclose(scale_pixels(px, "-1-1"), [[[-1.0, 128 / 127.5 - 1, 1.0]]], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(scale_pixels(px, "imagenet"),
                               [[[(0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225]]], rtol=1e-5)
    np.testing.assert_allclose(scale_pixels(px, "caffe"), [[[-123.68, 128 - 116.779, 255 - 103.939]]], rtol=1e-6)
    assert scale_pixels(px, "0-1").dtype == np.float32
    with pytest.raises(ValueError, match="scaling"):
        scale_pixels(px, "0-100")


def test_to_model_input_orders_channels_and_axes():
    x = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)  # H=2, W=3, C=3 (RGB)
    nhwc = to_model_input(x)
    assert nhwc.shape == (1, 2, 3, 3) and nhwc.flags.c_contiguous
    np.testing.assert_array_equal(nhwc[0], x)
    bgr = to_model_input(x, "BGR")
    np.testing.assert_array_equal(bgr[0, 1, 2], [x[1, 2, 2], x[1, 2, 1], x[1, 2, 0]])
    nchw = to_model_input(x, "RGB", "NCHW")
    assert nchw.shape == (1, 3, 2, 3)
    np.testing.assert_array_equal(nchw[0, 2], x[:, :, 2])
    assert to_model_input(x, batch=False, dtype=np.float16).shape == (2, 3, 3)


def test_resize_policies():
    img = solid(20, 40, (10, 200, 30))
    out = resize_for_model(img, "resize", (16, 16))
    assert out.shape == (16, 16, 3) and (out == (10, 200, 30)).all()
    # keep_aspect: 20x40 fits a 16x16 square as 8x16, centred: 4 black rows above and below
    out = resize_for_model(img, "keep_aspect", (16, 16))
    assert out.shape == (16, 16, 3)
    assert (out[4:12] == (10, 200, 30)).all()
    assert (out[:4] == 0).all() and (out[12:] == 0).all()
    # fit: the longer side reaches the size, no padding
    assert resize_for_model(img, "fit", (16, 16)).shape == (8, 16, 3)
    assert resize_for_model(img, "fit", (16, 16), scale=2.0).shape == (16, 32, 3)
    # none: the image as it is, times the scale
    assert resize_for_model(img, "none", None) is img
    assert resize_for_model(img, "none", None, scale=0.5).shape == (10, 20, 3)
    assert resize_for_model(img, "resize", (16, 16), scale=0.5).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="input size"):
        resize_for_model(img, "resize", None)


def test_gem_avg_max_none_pooling_by_hand():
    # a 2x1 map with 2 channels, NHWC: positions (1, 2) and (3, 0)
    nhwc = np.array([[[[1.0, 2.0]], [[3.0, 0.0]]]], np.float32)  # (1, H=2, W=1, C=2)
    gem = pool_output(nhwc, "gem", "NHWC", 3.0)
    np.testing.assert_allclose(gem, [((1 + 27) / 2) ** (1 / 3), ((8 + 1e-18) / 2) ** (1 / 3)], rtol=1e-6)
    np.testing.assert_allclose(pool_output(nhwc, "gem", gem_p=1.0), [2.0, (2 + 1e-6) / 2], rtol=1e-6)
    np.testing.assert_array_equal(pool_output(nhwc, "avg"), [2.0, 1.0])
    np.testing.assert_array_equal(pool_output(nhwc, "max"), [3.0, 2.0])
    np.testing.assert_array_equal(pool_output(nhwc, "none"), [1.0, 2.0, 3.0, 0.0])
    # the same map NCHW gives the same vectors (flattened in (H, W, C) order too)
    nchw = np.transpose(nhwc, (0, 3, 1, 2))
    for pooling in ("gem", "avg", "max", "none"):
        np.testing.assert_allclose(pool_output(nchw, pooling, "NCHW"), pool_output(nhwc, pooling, "NHWC"),
                                   rtol=1e-6)
    # tokens (1, N, C) are pooled over N; vectors stay as they are
    np.testing.assert_array_equal(pool_output(np.array([[[1.0, 4.0], [3.0, 0.0]]]), "avg"), [2.0, 2.0])
    np.testing.assert_array_equal(pool_output(np.array([[5.0, -1.0]]), "gem"), [5.0, -1.0])
    with pytest.raises(ValueError, match="shape"):
        pool_output(np.zeros((1, 2, 2, 2, 2)), "avg")


# ---------------------------------------------------------------------------------------------
# the backend on callables: each option does what it says


RGB = (200, 100, 50)
SCALED = {  # hand-computed model input of the pixel RGB for every scaling
    "0-255": (200.0, 100.0, 50.0),
    "0-1": (200 / 255, 100 / 255, 50 / 255),
    "-1-1": (200 / 127.5 - 1, 100 / 127.5 - 1, 50 / 127.5 - 1),
    "imagenet": ((200 / 255 - 0.485) / 0.229, (100 / 255 - 0.456) / 0.224, (50 / 255 - 0.406) / 0.225),
    "caffe": (200 - 123.68, 100 - 116.779, 50 - 103.939),
}


@pytest.mark.parametrize("scaling", sorted(SCALED))
@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_pixel_scaling_and_channel_order_on_a_mean_pixel_model(scaling, order):
    b = backend(mean_pixel, resize="none", scaling=scaling, channel_order=order)
    g = b.extract(solid(12, 9, RGB)).global_descriptor
    expected = SCALED[scaling] if order == "RGB" else SCALED[scaling][::-1]
    np.testing.assert_allclose(g, unit(expected), rtol=1e-5, atol=1e-6)
    assert g.dtype == np.float32 and g.shape == (3,)


def test_layout_nchw_feeds_channels_first():
    shapes: List[Tuple[int, ...]] = []

    def model(x):
        shapes.append(x.shape)
        return x.mean(axis=(2, 3))  # NCHW mean pixel

    b = backend(model, resize="resize", input_size=8, layout="NCHW", scaling="0-1")
    g = b.extract(solid(30, 20, RGB)).global_descriptor
    assert shapes[-1] == (1, 3, 8, 8)
    np.testing.assert_allclose(g, unit(SCALED["0-1"]), rtol=1e-5)


@pytest.mark.parametrize("policy, size, expected", [
    ("resize", 32, (1, 32, 32, 3)),
    ("keep_aspect", 32, (1, 32, 32, 3)),
    ("fit", 32, (1, 16, 32, 3)),  # a 50x100 image: the longer side becomes 32
    ("none", None, (1, 50, 100, 3)),
])
def test_resize_policy_sets_the_model_input_size(policy, size, expected):
    shapes = []

    def model(x):
        shapes.append(x.shape)
        return x.mean(axis=(1, 2))

    b = backend(model, resize=policy, input_size=size)
    b.extract(solid(50, 100, RGB))
    assert shapes[-1] == expected


def test_keep_aspect_pads_with_black_around_the_centred_image():
    seen = []
    b = backend(lambda x: seen.append(x) or x.mean(axis=(1, 2)), resize="keep_aspect", input_size=16)
    b.extract(solid(20, 40, RGB))
    x = seen[-1][0]
    assert (x[4:12] == RGB).all() and (x[:4] == 0).all() and (x[12:] == 0).all()
    # mean pixel: half of the square is the colour, half black
    np.testing.assert_allclose(b.extract(solid(20, 40, RGB)).global_descriptor, unit(RGB), rtol=1e-6)


def test_max_image_size_applies_before_resize_none():
    shapes = []
    b = backend(lambda x: shapes.append(x.shape) or x.mean(axis=(1, 2)), max_image_size=40, resize="none")
    b.extract(solid(50, 100, RGB))
    assert shapes[-1] == (1, 20, 40, 3)


def test_flip_averages_the_image_and_its_mirror():
    img = solid(6, 5, (0, 0, 0))
    img[:, 0] = (10, 0, 0)  # left column
    img[:, -1] = (0, 30, 40)  # right column
    left_column = lambda x: x[0, :, 0, :].mean(axis=0)  # noqa: E731 (the model: mean of the left column)
    no_flip = backend(left_column, resize="none").extract(img).global_descriptor
    np.testing.assert_allclose(no_flip, [1.0, 0.0, 0.0], atol=1e-7)
    g = backend(left_column, resize="none", flip=True).extract(img).global_descriptor
    # views: the image (left column (10, 0, 0)) and its mirror (left column (0, 30, 40)),
    # each L2-normalised, summed, L2-normalised
    expected = unit(unit([10, 0, 0]) + unit([0, 30, 40]))
    np.testing.assert_allclose(g, expected, rtol=1e-6)
    np.testing.assert_allclose(g, [1 / 2 ** 0.5, 0.6 / 2 ** 0.5, 0.8 / 2 ** 0.5], rtol=1e-6)


def test_multi_scale_averages_one_descriptor_per_scale():
    size_model = lambda x: np.array([x.shape[1], x.shape[2], 1.0])  # noqa: E731 (H, W, 1)
    img = textured(20, 30)
    g = backend(size_model, resize="resize", input_size=8, scales=(1.0, 0.5)).extract(img).global_descriptor
    np.testing.assert_allclose(g, unit(unit([8, 8, 1]) + unit([4, 4, 1])), rtol=1e-6)
    g = backend(size_model, resize="resize", input_size=8, scales=(1.0, 0.5), flip=True).extract(img).global_descriptor
    np.testing.assert_allclose(g, unit(2 * unit([8, 8, 1]) + 2 * unit([4, 4, 1])), rtol=1e-6)


def test_gem_pooling_of_a_feature_map_output():
    fmap = np.array([[[[1.0, 2.0]], [[3.0, 0.0]]]], np.float32)  # (1, H=2, W=1, C=2)
    g = backend(lambda x: fmap, resize="none", pooling="gem", gem_p=3.0).extract(solid(4, 4, RGB)).global_descriptor
    np.testing.assert_allclose(g, unit([14 ** (1 / 3), 4 ** (1 / 3)]), rtol=1e-6)
    g = backend(lambda x: fmap, resize="none", pooling="max").extract(solid(4, 4, RGB)).global_descriptor
    np.testing.assert_allclose(g, unit([3, 2]), rtol=1e-6)


def test_unit_norm_no_local_features_and_global_only_on_request(rng):
    g_model = lambda x: np.concatenate([x.mean(axis=(1, 2))[0], x.std(axis=(1, 2))[0]])  # noqa: E731
    b = backend(g_model, resize="resize", input_size=24, scaling="imagenet")
    assert b.local_dim == 0 and b.aggregator is None and b.global_dim == 6
    for seed in range(3):
        f = b.extract(textured(30 + seed, 40, seed))
        assert abs(float(np.linalg.norm(f.global_descriptor)) - 1.0) < 1e-6
        assert f.global_descriptor.dtype == np.float32 and f.global_descriptor.shape == (6,)
        assert len(f) == 0 and f.keypoints.shape == (0, 2) and f.descriptors.shape == (0, 0)
        assert f.scores.shape == (0,) and f.scales.shape == (0,) and f.image_size == (40, 30 + seed)
    calls = []
    b2 = backend(lambda x: calls.append(1) or g_model(x), resize="resize", input_size=24)
    n = len(calls)
    f = b2.extract(textured(30, 40), global_=False)
    assert f.global_descriptor is None and len(calls) == n  # no model call
    assert b2.extract(np.zeros((8, 8), np.uint8)).global_descriptor.shape == (6,)  # greyscale works


def test_several_outputs_need_a_name():
    two = lambda x: {"logits": np.ones((1, 5)), "embedding": x.mean(axis=(1, 2))}  # noqa: E731
    with pytest.raises(ValueError, match=r"extract\.embedding\.output"):
        backend(two, resize="none")
    g = backend(two, resize="none", output="embedding").extract(solid(4, 4, RGB)).global_descriptor
    np.testing.assert_allclose(g, unit(RGB), rtol=1e-6)
    with pytest.raises(ValueError, match=r"output='emb'.*returned \['embedding', 'logits'\]"):
        backend(two, resize="none", output="emb")


def test_settings_that_do_not_fit_fail_when_the_backend_is_built():
    with pytest.raises(ValueError, match=r"extract\.embedding\.input_size: .*takes any input size"):
        backend(mean_pixel, resize="resize")  # a callable has no static input size
    with pytest.raises(ValueError, match="failed on a test image"):
        backend(lambda x: np.zeros((1, 2, 2, 2, 2)), resize="none")
    with pytest.raises(ValueError, match="needs a model"):
        EmbeddingBackend(ExtractConfig(backend="embedding"))


def test_embedding_options_are_validated_by_the_config():
    c = get_config("embedding", ["extract.embedding.layout=nchw", "extract.embedding.scaling=ImageNet",
                                 "extract.embedding.channel_order=bgr", "extract.embedding.scales=0.7071,1"])
    e = c.extract.embedding
    assert (e.layout, e.scaling, e.channel_order, e.scales) == ("NCHW", "imagenet", "BGR", (0.7071, 1.0))
    assert c.verify.enabled is False and c.extract.backend == "embedding"
    for bad, message in (("resize=squash", r"extract\.embedding\.resize: expected one of resize, keep_aspect, fit, "
                                           r"none, got 'squash'"),
                         ("pooling=sum", r"extract\.embedding\.pooling: expected one of gem, avg, max, none"),
                         ("scales=0,1", r"extract\.embedding\.scales: expected positive numbers"),
                         ("gem_p=-1", r"extract\.embedding\.gem_p: expected a positive number"),
                         ("input_size=0", r"extract\.embedding\.input_size: expected a positive number"),
                         ("format=pt", r"extract\.embedding\.format: expected one of auto, keras, savedmodel, onnx")):
        with pytest.raises(ValueError, match=message):
            get_config("embedding", [f"extract.embedding.{bad}"])


# ---------------------------------------------------------------------------------------------
# model files: Keras, SavedModel, ONNX


def _onnx_ready() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def embedding_models(tmp_path_factory) -> Callable[..., Dict[str, Path]]:
    """``embedding_models(head="gap", **kwargs)`` -> {format: path}, exported once per key."""
    pytest.importorskip("tensorflow")
    from landmark_retrieval.testing import export_embedding_model

    cache: Dict[Tuple, Dict[str, Path]] = {}
    root = tmp_path_factory.mktemp("embedding_models")

    def get(**kwargs) -> Dict[str, Path]:
        key = tuple(sorted(kwargs.items()))
        if key not in cache:
            formats = ("keras", "savedmodel", "onnx") if _onnx_ready() else ("keras", "savedmodel")
            name = "_".join(f"{k}-{v}" for k, v in key) or "default"
            cache[key] = export_embedding_model(root / name, formats=formats, **kwargs)
        return cache[key]

    return get


def from_file(path: Path, **embedding) -> EmbeddingBackend:
    from landmark_retrieval.backends.registry import make_backend

    conf = ExtractConfig(backend="embedding", model_path=str(path), embedding=EmbeddingConfig(**embedding))
    return make_backend(conf)


@pytest.mark.slow
def test_keras_file_and_savedmodel_export_give_identical_descriptors(embedding_models):
    paths = embedding_models()
    kb = from_file(paths["keras"], input_size=64, scaling="-1-1")
    sb = from_file(paths["savedmodel"], input_size=64, scaling="-1-1")
    assert (kb.model.format, sb.model.format) == ("keras", "savedmodel")
    assert kb.global_dim == sb.global_dim == 32
    for seed, (h, w) in enumerate([(120, 90), (64, 64), (41, 203)]):
        img = textured(h, w, seed)
        a, b = kb.extract(img).global_descriptor, sb.extract(img).global_descriptor
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-6
    # a different image gives a different descriptor (the model is not constant)
    g7, g8 = (kb.extract(textured(80, 80, seed)).global_descriptor for seed in (7, 8))
    assert float(g7 @ g8) < 0.9999
    # the backend's descriptor is the model's own output, L2-normalised
    img = textured(64, 64, 3)
    raw = kb.model.__call__(to_model_input(scale_pixels(img, "-1-1")))
    np.testing.assert_allclose(kb.extract(img).global_descriptor, unit(next(iter(raw.values()))[0]), atol=1e-6)


@pytest.mark.slow
def test_onnx_export_in_nchw_gives_the_same_descriptors(embedding_models):
    if not _onnx_ready():
        pytest.skip("onnx / onnxruntime not installed (pip install 'landmark-retrieval[onnx]' onnx)")
    for head, pooling in (("gap", "gem"), ("map", "gem"), ("map", "none")):
        paths = embedding_models(head=head)
        kb = from_file(paths["keras"], input_size=48, pooling=pooling, flip=True)
        ob = from_file(paths["onnx"], input_size=48, pooling=pooling, flip=True)
        assert ob.layout == "NCHW" and kb.layout == "NHWC"  # found from the input shapes
        img = textured(70, 50, 4)
        np.testing.assert_allclose(ob.extract(img).global_descriptor, kb.extract(img).global_descriptor,
                                   rtol=0, atol=2e-6, err_msg=f"{head}/{pooling}")


@pytest.mark.slow
def test_keras_mean_pixel_model_by_hand(tmp_path):
    pytest.importorskip("tensorflow")
    from landmark_retrieval.testing.embedding_export import mean_pixel_network

    path = tmp_path / "mean.keras"
    mean_pixel_network().save(path)
    b = from_file(path, resize="keep_aspect", input_size=32, scaling="imagenet", channel_order="BGR")
    g = b.extract(solid(16, 32, RGB)).global_descriptor
    # the 16x32 image fills 16 of the 32 rows; the black padding is scaled too
    black = ((0 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225)
    mean = [(c + k) / 2 for c, k in zip(SCALED["imagenet"], black)]
    np.testing.assert_allclose(g, unit(mean[::-1]), rtol=1e-5)


@pytest.mark.slow
def test_keras_output_can_name_an_inner_layer(embedding_models):
    paths = embedding_models()
    default = from_file(paths["keras"], input_size=40)
    inner = from_file(paths["keras"], input_size=40, output="proj", pooling="avg")  # the map before GAP
    img = textured(40, 60, 2)
    np.testing.assert_allclose(inner.extract(img).global_descriptor, default.extract(img).global_descriptor,
                               atol=1e-6)
    with pytest.raises(EmbeddingModelError, match=r"output='nope' is neither an output .* nor a layer"):
        from_file(paths["keras"], input_size=40, output="nope")


@pytest.mark.slow
def test_fixed_size_models_and_their_errors(embedding_models):
    paths = embedding_models(input_size=48)
    b = from_file(paths["keras"])  # input_size from the model
    assert b.input_hw == (48, 48)
    assert b.extract(textured(100, 30)).global_descriptor.shape == (32,)
    with pytest.raises(ValueError, match=r"fixed 48x48 input: use extract\.embedding\.resize=resize or keep_aspect"):
        from_file(paths["keras"], resize="fit")
    with pytest.raises(ValueError, match=r"fixed 48x48 input"):
        from_file(paths["savedmodel"], input_size=64)


@pytest.mark.slow
def test_registry_recognises_the_model_formats(embedding_models, tmp_path):
    from landmark_retrieval.backends.registry import backend_for_model
    from landmark_retrieval.testing import export_test_model

    paths = embedding_models()
    assert backend_for_model(paths["keras"]) == "embedding"
    assert backend_for_model(paths["savedmodel"]) == "embedding"
    delg = export_test_model(tmp_path / "delg", style="tf2")
    assert backend_for_model(delg) == "delg"
    assert backend_for_model(tmp_path / "unknown") == "delg"  # the first backend that needs a model


def test_missing_or_unknown_model_files(tmp_path):
    with pytest.raises(EmbeddingModelError, match=r"does not exist\. Set extract\.embedding\.model_path"):
        from_file(tmp_path / "nope.keras")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(EmbeddingModelError, match=r"Cannot tell the format .*weights\.bin.*extract\.embedding\.format"):
        from_file(tmp_path / "weights.bin")
    with pytest.raises(EmbeddingModelError, match="not a SavedModel folder"):
        from_file(tmp_path, format="savedmodel")


def test_onnx_without_onnxruntime_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "m.onnx").write_bytes(b"not really")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(EmbeddingModelError, match=r"pip install 'landmark-retrieval\[onnx\]'"):
        from_file(tmp_path / "m.onnx")
