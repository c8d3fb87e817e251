"""The ORB backend: binary features in original-image pixels, VLAD of their bits, uint8 stores,
and a whole run with ``extract.backend=orb``."""
import csv

import cv2
import numpy as np
import pytest

from landmark_retrieval.backends.aggregators import VladAggregator
from landmark_retrieval.backends.codebook import as_float_descriptors
from landmark_retrieval.backends.extraction import codebook_sample
from landmark_retrieval.backends.orb import OrbBackend
from landmark_retrieval.backends.registry import BACKENDS, make_backend
from landmark_retrieval.demo import load_photo
from landmark_retrieval.io.images import read_image
from landmark_retrieval.io.store import FeatureStore, validate_shard
from landmark_retrieval.io.writer import ShardWriter
from landmark_retrieval.matching.pairs import verify_pair
from landmark_retrieval.presets import get_config
from landmark_retrieval.testing.two_view import grid_error, project

ORB = ["extract.backend=orb"]


def _rotated(image, degrees):
    """``image`` rotated about its centre on a canvas that holds all of it, and the 3x3 map."""
    h, w = image.shape[:2]
    A = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    c, s = abs(A[0, 0]), abs(A[0, 1])
    nw, nh = int(h * s + w * c), int(h * c + w * s)
    A[0, 2] += nw / 2 - w / 2
    A[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(image, A, (nw, nh)), np.vstack([A, [0, 0, 1]])


def test_orb_is_registered_with_its_sections():
    info = BACKENDS["orb"]
    assert info.sections[0] == "orb" and "vlad" in info.sections and not info.needs_model
    b = make_backend(get_config("demo", ORB).extract)
    assert isinstance(b, OrbBackend) and b.describe()["orb"]["max_keypoints"] == 1000


def test_orb_matches_a_rotated_real_photo(shared_data):
    image = read_image(shared_data / "lightglue_assets" / "sacre_coeur1.jpg")
    rotated, truth = _rotated(image, 30)
    conf = get_config("demo", ORB)
    full = make_backend(conf.extract)
    # the rotated copy is extracted at reduced size: its keypoints still come in its own pixels
    small = make_backend(get_config("demo", ORB + ["extract.max_image_size=640"]).extract)
    f0, f1 = full.extract(image), small.extract(rotated)
    assert f0.descriptors.dtype == np.uint8 and f0.descriptors.shape == (1000, 32)
    assert f1.image_size == (rotated.shape[1], rotated.shape[0]) and f1.keypoints[:, 0].max() > 640
    res = verify_pair(f0, f1, conf.verify)
    assert res.homography is not None and res.num_inliers >= 200, res.num_inliers
    err = grid_error(res.homography, truth, f0.image_size)
    assert err.max() < 4.0, f"grid error up to {err.max():.2f} px"
    # the inliers agree with the true rotation
    kp0, kp1 = f0.keypoints[res.matches[res.inlier_mask, 0]], f1.keypoints[res.matches[res.inlier_mask, 1]]
    assert np.median(np.linalg.norm(project(truth, kp0) - kp1, axis=1)) < 2.0


def test_orb_shapes_scores_and_empty_images():
    image = load_photo("astronaut")
    b = make_backend(get_config("demo", ORB + ["extract.orb.max_keypoints=300"]).extract)
    f = b.extract(image)
    assert f.keypoints.shape == (300, 2) and f.descriptors.shape == (300, 32) and f.descriptors.dtype == np.uint8
    assert f.scores.dtype == np.float32 and np.all(np.diff(f.scores) <= 0)  # strongest first
    assert f.scales.min() >= 31 - 1e-3  # ORB keypoint size: the patch size at its pyramid level
    assert (f.keypoints >= 0).all() and (f.keypoints[:, 0] < image.shape[1]).all()
    assert f.global_descriptor is None and f.image_size == (image.shape[1], image.shape[0])
    assert np.array_equal(b.extract(image).descriptors, f.descriptors)  # deterministic
    for img in (np.zeros((64, 64, 3), np.uint8), np.zeros((2, 3, 3), np.uint8)):
        e = b.extract(img)
        assert e.keypoints.shape == (0, 2) and e.descriptors.shape == (0, 32) and e.descriptors.dtype == np.uint8
        assert e.scores.shape == (0,) and e.scales.shape == (0,)
    with pytest.raises(ValueError, match="RGB uint8"):
        b.extract(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="extract.orb"):
        make_backend(get_config("demo", ORB + ["extract.orb.scale_factor=1.0"]).extract)


def test_bits_unpack_and_vlad_of_bits():
    d = np.array([[0b10000001] + [0] * 31, [255] * 32], np.uint8)
    bits = as_float_descriptors(d)
    assert bits.shape == (2, 256) and bits.dtype == np.float32
    assert bits[0].nonzero()[0].tolist() == [0, 7] and bits[1].sum() == 256
    assert as_float_descriptors(np.zeros((0, 32), np.uint8)).shape == (0, 256)
    f = np.ones((2, 3), np.float64)
    assert as_float_descriptors(f).dtype == np.float32  # float descriptors pass through
    rng = np.random.default_rng(0)
    packed = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    agg = make_backend(get_config("demo", ORB + ["extract.vlad.num_words=4", "extract.vlad.seed=3",
                                                 "extract.vlad.max_training_descriptors=200"]).extract).aggregator
    codebook = agg.fit(packed)
    assert codebook.shape == (4, 256) and codebook.dtype == np.float32
    # sampling the packed rows draws the rows VLAD draws from the unpacked ones
    plain = VladAggregator(num_words=4, seed=3, max_training_descriptors=200)
    assert np.array_equal(codebook, plain.fit(as_float_descriptors(packed)))
    v = agg.encode(packed[:50], codebook)
    assert v.shape == (4 * 256,) and np.isclose(np.linalg.norm(v), 1.0)
    assert np.array_equal(v, plain.encode(as_float_descriptors(packed[:50]), codebook))
    assert not agg.encode(np.zeros((0, 32), np.uint8), codebook).any()


def test_binary_descriptors_round_trip_through_the_store(tmp_path):
    b = make_backend(get_config("demo", ORB + ["extract.orb.max_keypoints=200"]).extract)
    feats = {"a": b.extract(load_photo("astronaut")), "blank": b.extract(np.zeros((32, 32, 3), np.uint8))}
    store_dir = tmp_path / "store"
    with ShardWriter(store_dir, shard_size=1, half_precision=True) as w:  # half precision leaves uint8 alone
        for k, f in feats.items():
            w.add(k, f)
    shards = sorted(store_dir.glob("part-*.h5"))
    assert len(shards) == 2 and all(validate_shard(p) is None for p in shards)
    with FeatureStore(store_dir) as store:
        for k, f in feats.items():
            g = store.local(k)
            assert g.descriptors.dtype == np.uint8 and np.array_equal(g.descriptors, f.descriptors)
            assert np.array_equal(g.keypoints, f.keypoints) and g.image_size == f.image_size
        assert dict((k, d.dtype) for k, d in store.iter_local_descriptors()) == {"a": np.uint8, "blank": np.uint8}
        sample = codebook_sample(store, 50, seed=0)
        assert sample.dtype == np.uint8 and sample.shape == (50, 32)  # 2 * 50 / 2 images each, only "a" has any
        assert np.array_equal(sample, codebook_sample(store, 50, seed=0))
    # a damaged shard is still detected and skipped
    damaged = shards[0]
    damaged.write_bytes(damaged.read_bytes()[:200])
    assert validate_shard(damaged) is not None
    with FeatureStore(store_dir) as store:
        assert store.local_ids == ["blank"]


@pytest.mark.slow
def test_run_with_the_orb_backend(small_dataset, tmp_path):
    from landmark_retrieval.cli import main
    from landmark_retrieval.io.dataset import load_dataset
    from landmark_retrieval.io.layout import feature_dir
    from landmark_retrieval.io.submission import read_submission

    work, out = tmp_path / "work", tmp_path / "submission.csv"
    assert main(["run", "--data", str(small_dataset), "--work", str(work), "--out", str(out), "--preset", "demo",
                 "--set", "extract.backend=orb", "--workers", "1", "-q"]) == 0
    ds = load_dataset(small_dataset)
    assert list(read_submission(out)) == ds.test_ids
    with FeatureStore(feature_dir(work, "test")) as store:
        assert store.local(ds.test_ids[0]).descriptors.dtype == np.uint8
        assert store.globals()[1].shape[1] == 32 * 256  # VLAD of bits with the demo's 32 words
        searchable = len(store.global_ids)  # a featureless test image has none (a recorded failure)
    rows = list(csv.DictReader(open(work / "verification.csv", newline="")))
    assert searchable >= len(ds.test_ids) - 2 and len(rows) == searchable * 10
    assert max(int(r["inliers"]) for r in rows) >= 20
