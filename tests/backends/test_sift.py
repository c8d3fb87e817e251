import numpy as np
import pytest

from landmark_retrieval.backends.aggregators import VladAggregator
from landmark_retrieval.backends.registry import make_backend
from landmark_retrieval.backends.sift import root_sift
from landmark_retrieval.demo import load_photo
from landmark_retrieval.presets import get_config


def test_root_sift_is_unit_hellinger():
    d = np.array([[1, 3, 0, 0], [0, 0, 0, 0]], np.float32)
    r = root_sift(d)
    assert np.allclose(r[0], np.sqrt([0.25, 0.75, 0, 0]))
    assert np.allclose(r[1], 0)
    assert root_sift(np.zeros((0, 128), np.float32)).shape == (0, 128)


def test_sift_backend_shapes_and_coordinates():
    image = load_photo("astronaut")
    b = make_backend(get_config("demo", ["extract.sift.max_keypoints=300"]).extract)
    f = b.extract(image)
    assert f.keypoints.shape == (300, 2) and f.descriptors.shape == (300, 128)
    assert f.global_descriptor is None and f.image_size == (image.shape[1], image.shape[0])
    assert np.allclose(np.linalg.norm(f.descriptors, axis=1), 1, atol=1e-5)
    assert (f.keypoints >= 0).all() and (f.keypoints[:, 0] < image.shape[1]).all()
    # max_image_size maps keypoints back to the original pixels
    small = make_backend(get_config("demo", ["extract.sift.max_keypoints=300", "extract.max_image_size=256"]).extract)
    g = small.extract(image)
    assert g.keypoints[:, 0].max() > 300  # original coordinates, not the 256-px image's
    d = np.linalg.norm(f.keypoints[:, None] - g.keypoints[None], axis=2).min(0)
    assert np.median(d) < 3.0


def test_sift_on_blank_and_tiny_images():
    b = make_backend(get_config("demo").extract)
    for img in (np.zeros((64, 64, 3), np.uint8), np.zeros((2, 3, 3), np.uint8)):
        f = b.extract(img)
        assert f.keypoints.shape == (0, 2) and f.descriptors.shape == (0, 128) and f.scores.shape == (0,)
    with pytest.raises(ValueError, match="RGB uint8"):
        b.extract(np.zeros((10, 10), np.uint8))


def test_vlad_hand_case_and_properties(rng):
    agg = VladAggregator(num_words=2, power=1.0, intra_normalization=False)
    codebook = np.array([[0, 0], [10, 10]], np.float32)
    v = agg.encode(np.array([[1, 0], [0, 1], [11, 10]], np.float32), codebook)
    # word 0 residual sum (1, 1), word 1 residual (1, 0): normalised
    assert np.allclose(v, np.array([1, 1, 1, 0]) / np.sqrt(3))
    assert np.array_equal(agg.encode(np.zeros((0, 2), np.float32), codebook), np.zeros(4, np.float32))
    x = rng.normal(size=(500, 16)).astype(np.float32)
    cb = VladAggregator(num_words=8, seed=1).fit(x)
    assert cb.shape == (8, 16)
    assert np.array_equal(cb, VladAggregator(num_words=8, seed=1).fit(x))  # seeded
    e = VladAggregator(num_words=8).encode(x[:50], cb)
    assert e.shape == (128,) and abs(np.linalg.norm(e) - 1) < 1e-5
    with pytest.raises(ValueError, match="no local descriptors"):
        VladAggregator().fit(np.zeros((0, 16), np.float32))
