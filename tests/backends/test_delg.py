"""DELG backend: loader (TF1 prune / TF2 signature), extraction semantics, errors.

The real DELG model cannot be downloaded here; the tests use the tiny DELG-architecture
network of :mod:`landmark_retrieval.testing.delg_export`, exported in both styles.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np
import pytest
from PIL import Image

from landmark_retrieval.backends.delg import boxes_to_keypoints, pool_global
from landmark_retrieval.config import BASELINE_SCALES, ExtractConfig
from landmark_retrieval.features import l2_normalize

REAL_PHOTO = Path("/work/shared/data/oxford_affine/graf/img1.png")


# No tests/backends/conftest.py on purpose: other test modules do ``from conftest import ...``,
# and a second module named ``conftest`` would shadow tests/conftest.py.
@pytest.fixture(scope="session")
def delg_model(tmp_path_factory) -> Callable[..., Path]:
    """``delg_model(style="tf1", **export_kwargs)`` -> SavedModel directory, exported once per key."""
    pytest.importorskip("tensorflow")
    from landmark_retrieval.testing import export_test_model

    cache: Dict[Tuple, Path] = {}
    root = tmp_path_factory.mktemp("delg_models")

    def get(style: str = "tf1", **kwargs) -> Path:
        key = (style,) + tuple(sorted(kwargs.items()))
        if key not in cache:
            name = "_".join([style] + [f"{k}-{v}" for k, v in sorted(kwargs.items())])
            cache[key] = export_test_model(root / name, style=style, **kwargs)
        return cache[key]

    return get


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    from landmark_retrieval.testing.delg_export import textured_image

    return textured_image(h, w, seed)


def make(path, max_image_size=None, **delg):
    """A DELG backend on ``path``; keyword arguments other than max_image_size go to extract.delg."""
    from landmark_retrieval.backends.registry import make_backend
    from landmark_retrieval.config import DelgConfig

    return make_backend(ExtractConfig(backend="delg", model_path=str(path), max_image_size=max_image_size,
                                      delg=DelgConfig(**delg)))


def assert_valid(feats, dim=128):
    n = len(feats)
    assert feats.keypoints.shape == (n, 2) and feats.keypoints.dtype == np.float32
    assert feats.descriptors.shape == (n, dim) and feats.descriptors.dtype == np.float32
    assert feats.scores.shape == (n,) and feats.scores.dtype == np.float32
    assert feats.scales.shape == (n,) and feats.scales.dtype == np.float32
    if n:
        np.testing.assert_allclose(np.linalg.norm(feats.descriptors, axis=1), 1.0, atol=1e-5)
        assert np.all(np.diff(feats.scores) <= 0), "features are sorted by attention"
    if feats.global_descriptor is not None:
        g = feats.global_descriptor
        assert g.dtype == np.float32 and g.ndim == 1
        assert abs(float(np.linalg.norm(g)) - 1.0) < 1e-5


# ------------------------------------------------------------------------------ pure numpy


def test_pool_global_l2_sum_l2():
    raw = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 10.0]], np.float64)
    out = pool_global(raw)
    expected = np.array([0.6, 0.8, 1.0]) / np.linalg.norm([0.6, 0.8, 1.0])
    assert out.dtype == np.float32 and out.shape == (3,)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(pool_global(np.array([1.0, 1.0])), [2 ** -0.5] * 2, rtol=1e-6)
    with pytest.raises(ValueError):
        pool_global(np.zeros((0, 4)))


def test_boxes_to_keypoints_swaps_to_xy():
    boxes = np.array([[10, 20, 30, 60], [0, 0, 1, 3]], np.float32)  # ymin xmin ymax xmax
    kp = boxes_to_keypoints(boxes)
    assert kp.dtype == np.float32
    np.testing.assert_allclose(kp, [[40, 20], [1.5, 0.5]])
    assert boxes_to_keypoints(np.zeros((0, 4))).shape == (0, 2)
    rows = l2_normalize(np.array([[3, 4], [0, 0]]))
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0, 0]])


# ------------------------------------------------------------------------------ loader


@pytest.mark.slow
@pytest.mark.parametrize("style", ["tf1", "tf2"])
def test_loader_detects_style(delg_model, style):
    import tensorflow as tf

    from landmark_retrieval.backends.delg import load_delg

    path = delg_model(style)
    assert hasattr(tf.saved_model.load(str(path)), "prune") == (style == "tf1")
    model = load_delg(path)
    assert model.style == style
    assert model.has_local and model.has_global
    assert model.has_global_scales_ind == (style == "tf2")  # default layout of each style
    assert model.local_dim == 128 and model.global_dim == 2048


@pytest.mark.slow
def test_tf1_export_works_with_kaggle_style_prune(delg_model):
    """The exact calls of the Kaggle baseline notebook work on the TF1 export."""
    import tensorflow as tf

    m = tf.saved_model.load(str(delg_model("tf1")))
    feeds = ["input_image:0", "input_scales:0", "input_abs_thres:0"]
    glob = m.prune(feeds, ["global_descriptors:0"])
    loc = m.prune(feeds + ["input_max_feature_num:0"], ["boxes:0", "features:0"])
    img = tf.constant(textured(128, 160), tf.uint8)
    scales = tf.convert_to_tensor(list(BASELINE_SCALES), tf.float32)
    assert glob(img, scales, tf.constant(175.0))[0].shape == (3, 2048)
    boxes, feats = loc(img, scales, tf.constant(0.0), tf.constant(5))
    assert boxes.shape == (5, 4) and feats.shape == (5, 128)


@pytest.mark.slow
def test_tf1_and_tf2_exports_give_identical_features(delg_model):
    b1, b2 = make(delg_model("tf1")), make(delg_model("tf2"))
    for seed, (h, w) in enumerate([(256, 320), (301, 199)]):
        img = textured(h, w, seed)
        f1, f2 = b1.extract(img), b2.extract(img)
        assert_valid(f1)
        assert len(f1) == len(f2) > 0
        for name in ("keypoints", "descriptors", "scores", "scales", "global_descriptor"):
            np.testing.assert_allclose(getattr(f1, name), getattr(f2, name), rtol=1e-5, atol=1e-5,
                                       err_msg=name)


@pytest.mark.slow
def test_global_scales_ind_fed_or_gathered_alike(delg_model):
    """Models without ``input_global_scales_ind`` get their rows gathered in numpy instead."""
    img = textured(200, 240, 5)
    ref = make(delg_model("tf1"), global_scales_ind=(1, 2))
    fed_tf1 = make(delg_model("tf1", with_global_scales_ind=True), global_scales_ind=(1, 2))
    fed_tf2 = make(delg_model("tf2"), global_scales_ind=(1, 2))
    assert not ref.model.has_global_scales_ind and fed_tf1.model.has_global_scales_ind
    g = ref.extract(img).global_descriptor
    np.testing.assert_allclose(fed_tf1.extract(img).global_descriptor, g, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fed_tf2.extract(img).global_descriptor, g, rtol=1e-5, atol=1e-6)
    raw = ref.model(img, BASELINE_SCALES)["global_descriptors"]
    assert raw.shape == (3, 2048)
    np.testing.assert_allclose(g, pool_global(raw[1:]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(g, pool_global(raw), atol=1e-4)  # the selection matters


# ------------------------------------------------------------------------------ extraction


@pytest.mark.slow
@pytest.mark.parametrize("style", ["tf1", "tf2"])
def test_feed_order_threshold_and_max_features(delg_model, style):
    """threshold 0 keeps every location, max 7 keeps 7: swapped inputs would give 0 features."""
    img = textured(160, 200, 1)
    feats = make(delg_model(style), score_threshold=0.0, max_keypoints=7).extract(img)
    assert len(feats) == 7
    assert_valid(feats)
    none = make(delg_model(style), score_threshold=1e9, max_keypoints=1000).extract(img)
    assert len(none) == 0 and none.descriptors.shape == (0, 128)
    assert_valid(none)
    raw = make(delg_model(style)).model(img, [1.0], abs_thres=0.0, max_feature_num=7)
    assert raw["boxes"].shape == (7, 4) and raw["scores"].shape == (7, 1)


@pytest.mark.slow
def test_default_baseline_settings_give_a_reasonable_number_of_features(delg_model):
    backend = make(delg_model("tf1"))
    assert backend.describe() == {
        "name": "delg", "model_path": str(Path(delg_model("tf1")).resolve()), "style": "tf1",
        "max_image_size": None,
        "delg": {"scales": list(BASELINE_SCALES), "score_threshold": 175.0, "max_keypoints": 1000,
                 "global_scales_ind": None, "local": True, "global_": True},
    }
    feats = backend.extract(textured(512, 512, 2))
    assert_valid(feats)
    assert 50 <= len(feats) <= 1000
    assert feats.image_size == (512, 512)
    inverse = 1.0 / feats.scales.astype(np.float64)  # scales are 1 / image scale
    assert np.all(np.min(np.abs(inverse[:, None] - np.array(BASELINE_SCALES)), axis=1) < 1e-5)
    assert np.all(feats.scores >= 175.0)


@pytest.mark.slow
def test_keypoints_are_xy_inside_the_image_and_map_back_after_resize(delg_model):
    h, w = 400, 600  # wide image: x spans further than y
    img = textured(h, w, 3)
    backend = make(delg_model("tf1"), max_image_size=300, score_threshold=0.0,
                   max_keypoints=100_000)
    feats = backend.extract(img)
    assert feats.image_size == (w, h)
    kp = feats.keypoints
    assert np.all(kp >= 0) and np.all(kp[:, 0] < w) and np.all(kp[:, 1] < h)
    assert kp[:, 0].max() > h, "x must be the long (width) axis"
    # By hand: resize to 300x200 (factor 0.5), run the raw model, box centres, undo the resize.
    small = np.asarray(Image.fromarray(img).resize((300, 200), Image.BILINEAR))
    raw = backend.model(small, BASELINE_SCALES, abs_thres=0.0, max_feature_num=100_000)
    boxes = raw["boxes"]  # [ymin, xmin, ymax, xmax] in resized pixels
    cx, cy = (boxes[:, 1] + boxes[:, 3]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2
    expected = np.stack([(cx + 0.5) * 2.0 - 0.5, (cy + 0.5) * 2.0 - 0.5], axis=1)
    assert len(kp) == len(expected) > 0
    np.testing.assert_allclose(kp, expected, atol=1e-3)
    np.testing.assert_allclose(feats.descriptors, l2_normalize(raw["features"]), atol=1e-5)
    # Without resize, keypoints are the box centres on the original image.
    full = make(delg_model("tf1"), score_threshold=0.0, max_keypoints=50, scales=(1.0,))
    raw = full.model(img, [1.0], abs_thres=0.0, max_feature_num=50)
    np.testing.assert_allclose(full.extract(img).keypoints, boxes_to_keypoints(raw["boxes"]))


@pytest.mark.slow
@pytest.mark.parametrize("style", ["tf1", "tf2"])
def test_global_only_and_local_only_models(delg_model, style):
    img = textured(180, 220, 4)
    g_only = make(delg_model(style, with_local=False))
    assert not g_only.model.has_local and g_only.model.has_global
    feats = g_only.extract(img)
    assert len(feats) == 0 and feats.descriptors.shape == (0, 128) and feats.keypoints.shape == (0, 2)
    assert_valid(feats)
    assert feats.global_descriptor.shape == (2048,)
    np.testing.assert_allclose(feats.global_descriptor,
                               make(delg_model(style)).extract(img).global_descriptor, atol=1e-5)
    l_only = make(delg_model(style, with_global=False))
    assert l_only.model.has_local and not l_only.model.has_global
    feats = l_only.extract(img)
    assert feats.global_descriptor is None and len(feats) > 0
    assert_valid(feats)


@pytest.mark.slow
def test_config_switches_off_heads(delg_model):
    img = textured(150, 150, 6)
    feats = make(delg_model("tf1"), local=False).extract(img)
    assert len(feats) == 0 and feats.global_descriptor is not None
    feats = make(delg_model("tf2"), global_=False).extract(img)
    assert len(feats) > 0 and feats.global_descriptor is None


@pytest.mark.slow
@pytest.mark.parametrize("style", ["tf1", "tf2"])
def test_tiny_and_odd_images(delg_model, style):
    backend = make(delg_model(style))
    for shape in [(5, 5, 3), (1, 1, 3), (9, 300, 3)]:
        try:
            feats = backend.extract(textured(*shape[:2]))
        except ValueError as exc:  # allowed, but it must name the size
            assert f"{shape[1]}x{shape[0]}" in str(exc)
            continue
        assert len(feats) == 0
        assert feats.keypoints.shape == (0, 2) and feats.descriptors.shape == (0, 128)
        assert feats.scores.shape == (0,) and feats.scales.shape == (0,)
        assert feats.image_size == (shape[1], shape[0])
        assert_valid(feats)
    # a scale that makes a 1-px image vanish: ValueError naming the size, nothing worse
    small_scale = make(delg_model(style), scales=(0.25,))
    try:
        feats = small_scale.extract(textured(1, 1))
        assert len(feats) == 0
    except ValueError as exc:
        assert "1x1" in str(exc)
    # grayscale and RGBA arrays are accepted; other dtypes are rejected clearly
    gray = textured(64, 64)[..., 0]
    assert_valid(backend.extract(gray))
    assert_valid(backend.extract(np.dstack([textured(64, 64), np.full((64, 64), 255, np.uint8)])))
    with pytest.raises(ValueError, match="uint8"):
        backend.extract(np.zeros((32, 32, 3), np.float32))


@pytest.mark.slow
@pytest.mark.skipif(not REAL_PHOTO.is_file(), reason="no real photo in /work/shared/data")
def test_real_photo(delg_model):
    from landmark_retrieval.io.images import read_image

    img = read_image(REAL_PHOTO)
    h, w = img.shape[:2]
    feats = make(delg_model("tf1"), max_image_size=512).extract(img)
    assert_valid(feats)
    assert feats.image_size == (w, h) and len(feats) > 0
    assert np.all(feats.keypoints >= 0)
    assert np.all(feats.keypoints[:, 0] < w) and np.all(feats.keypoints[:, 1] < h)


# ------------------------------------------------------------------------------ errors


def test_backend_without_model_path_says_how_to_fix():
    from landmark_retrieval.backends.registry import make_backend

    with pytest.raises(ValueError, match="--model PATH"):
        make_backend(ExtractConfig(backend="delg"))


def test_missing_directory_and_no_saved_model(tmp_path):
    from landmark_retrieval.backends.delg import DelgModelError, load_delg

    missing = tmp_path / "nope"
    with pytest.raises(DelgModelError, match="does not exist") as exc:
        load_delg(missing)
    assert str(missing) in str(exc.value) and "--model" in str(exc.value)
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(DelgModelError, match=r"no saved_model\.pb.*weights\.h5"):
        load_delg(tmp_path)


@pytest.mark.slow
def test_savedmodel_of_neither_style_or_missing_tensors(tmp_path):
    import tensorflow as tf

    from landmark_retrieval.backends.delg import DelgModelError, load_delg

    # TF2 export without any signature: no prune, no serving_default.
    tf.saved_model.save(tf.Module(), str(tmp_path / "bare"))
    with pytest.raises(DelgModelError, match=r"neither.*signatures found: \[\]") as exc:
        load_delg(tmp_path / "bare")
    assert str(tmp_path / "bare") in str(exc.value)

    # TF2 export with a serving_default that is not DELG.
    module = tf.Module()
    module.f = tf.function(lambda input_image: {"foo": tf.cast(input_image, tf.float32)},
                           input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, "input_image")])
    tf.saved_model.save(module, str(tmp_path / "other"), signatures={"serving_default": module.f})
    with pytest.raises(DelgModelError, match="missing input 'input_scales'"):
        load_delg(tmp_path / "other")

    # TF1 graph without the DELG tensor names.
    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        tf.identity(x * 2.0, name="y")
        with tf.compat.v1.Session(graph=graph) as sess:
            builder = tf.compat.v1.saved_model.Builder(str(tmp_path / "tf1"))
            builder.add_meta_graph_and_variables(sess, [tf.saved_model.SERVING])
            builder.save()
    with pytest.raises(DelgModelError, match="missing input 'input_image'.*no output 'global_descriptors'"):
        load_delg(tmp_path / "tf1")

    # A corrupt saved_model.pb.
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(DelgModelError, match="could not load"):
        load_delg(tmp_path / "corrupt")
