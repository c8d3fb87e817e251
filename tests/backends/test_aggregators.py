"""Global descriptors of the classical backends: colour histogram, BoW tf-idf, Fisher vectors,
VLAD on binary descriptors, the registry and the pipeline with each of them."""
import math

import numpy as np
import pytest

from landmark_retrieval.backends.aggregators import GLOBAL_DESCRIPTORS, BowAggregator, VladAggregator, make_global
from landmark_retrieval.backends.codebook import as_float_descriptors
from landmark_retrieval.backends.colour import colour_histogram
from landmark_retrieval.backends.fisher import FisherAggregator, FisherModel
from landmark_retrieval.backends.registry import make_backend
from landmark_retrieval.io.dataset import load_dataset
from landmark_retrieval.io.layout import codebook_path, feature_dir
from landmark_retrieval.io.store import FeatureStore, read_array, read_meta
from landmark_retrieval.io.submission import read_submission
from landmark_retrieval.presets import get_config

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


# --------------------------------------------------------------------------------------------
# colour histogram
# --------------------------------------------------------------------------------------------
def test_colour_histogram_of_a_hand_made_image():
    image = np.array([[RED, RED], [GREEN, WHITE]], np.uint8)
    # OpenCV HSV: red (0, 255, 255), green (60, 255, 255), white (0, 0, 255); bins (4, 2, 2):
    # H bin = H * 4 // 180, S/V bin = value * 2 // 256 -> red (0,1,1)=3, green (1,1,1)=7, white (0,0,1)=1
    h = colour_histogram(image, "hsv", (4, 2, 2), "hellinger")
    expected = np.zeros(16)
    expected[[3, 7, 1]] = np.sqrt([2 / 4, 1 / 4, 1 / 4])
    assert h.dtype == np.float32 and h.shape == (16,)
    assert np.allclose(h, expected, atol=1e-7)
    expected[[3, 7, 1]] = np.array([2, 1, 1]) / math.sqrt(6)
    assert np.allclose(colour_histogram(image, "hsv", (4, 2, 2), "l2"), expected, atol=1e-7)
    # Lab (OpenCV 8 bit): black (0, 128, 128), white (255, 128, 128); bins 4 each -> 10 and 58
    lab = colour_histogram(np.array([[BLACK, WHITE, WHITE]], np.uint8), "lab", (4, 4, 4), "l2")
    expected = np.zeros(64)
    expected[[10, 58]] = np.array([1, 2]) / math.sqrt(5)
    assert np.allclose(lab, expected, atol=1e-7)


def test_colour_histogram_of_grey_blank_and_empty_images():
    grey = np.array([[0, 128], [255, 255]], np.uint8)
    as_rgb = np.repeat(grey[:, :, None], 3, axis=2)
    assert np.array_equal(colour_histogram(grey), colour_histogram(as_rgb))
    # grey pixels: hue 0, saturation 0; value bins 0, 4, 7, 7 of (8, 8, 8)
    expected = np.zeros(512)
    expected[[0, 4, 7]] = np.sqrt([1 / 4, 1 / 4, 2 / 4])
    assert np.allclose(colour_histogram(grey), expected, atol=1e-7)
    black = colour_histogram(np.zeros((5, 7, 3), np.uint8))
    assert black[0] == 1.0 and black.sum() == 1.0  # a blank image still has a usable descriptor
    assert np.array_equal(colour_histogram(np.zeros((0, 4, 3), np.uint8)), np.zeros(512, np.float32))
    with pytest.raises(ValueError, match="extract.colour.space"):
        colour_histogram(grey, space="rgb")
    with pytest.raises(ValueError, match="uint8"):
        colour_histogram(grey.astype(np.float32))


def test_colour_backend_gives_the_histogram_and_skips_sift_without_local():
    from landmark_retrieval.demo import load_photo

    image = load_photo("astronaut")
    conf = get_config("demo", ["extract.global_descriptor=colour", "extract.colour.bins=4,4,4",
                               "extract.sift.max_keypoints=50"]).extract
    b = make_backend(conf)
    assert b.aggregator is None
    f = b.extract(image)
    assert f.descriptors.shape == (50, 128) and f.global_descriptor.shape == (64,)
    assert np.allclose(f.global_descriptor, colour_histogram(image, "hsv", (4, 4, 4)))
    g = b.extract(image, local=False)
    assert len(g) == 0 and np.array_equal(g.global_descriptor, f.global_descriptor)
    assert b.extract(image, global_=False).global_descriptor is None


# --------------------------------------------------------------------------------------------
# bag of words with tf-idf
# --------------------------------------------------------------------------------------------
WORDS = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)


def near(*words):
    return (WORDS[list(words)] + 0.5).astype(np.float32).reshape(-1, 2)


def test_bow_tf_idf_on_a_toy_vocabulary():
    agg = BowAggregator(num_words=4)
    model = np.hstack([WORDS, np.ones((4, 1), np.float32)])
    docs = [near(0, 0, 1), near(1, 2), near(0), np.zeros((0, 2), np.float32)]
    # N = 4 documents; df = (2, 2, 1, 0) -> idf = (ln 2, ln 2, ln 4, 0)
    df, n = agg.document_frequencies(model, iter(docs))
    assert df.tolist() == [2, 2, 1, 0] and n == 4
    fitted = agg.fit_documents(model, iter(docs))
    assert np.allclose(fitted[:, -1], [math.log(2), math.log(2), math.log(4), 0.0])
    assert np.array_equal(fitted[:, :-1], WORDS)
    # query: counts (1, 0, 2, 1) -> tf-idf (ln 2, 0, 4 ln 2, 0) -> (1, 0, 4, 0) / sqrt(17)
    v = agg.encode(near(0, 2, 2, 3), fitted)
    assert v.dtype == np.float32 and np.allclose(v, np.array([1, 0, 4, 0]) / math.sqrt(17), atol=1e-6)
    assert agg.term_counts(near(0, 2, 2, 3), fitted).tolist() == [1, 0, 2, 1]
    assert np.array_equal(agg.encode(np.zeros((0, 2), np.float32), fitted), np.zeros(4, np.float32))
    assert not agg.encode(near(3), fitted).any()  # only a word no train image has: no usable vector
    assert sorted(agg.document_frequencies(model, iter(docs[::-1]))[0]) == sorted(df)  # order-free counts


def test_bow_fit_is_seeded_and_independent_of_row_order(rng):
    x = rng.normal(size=(600, 8)).astype(np.float32)
    model = BowAggregator(num_words=16, seed=3).fit(x)
    assert model.shape == (16, 9) and model.dtype == np.float32 and np.all(model[:, -1] == 1)
    assert np.array_equal(model, BowAggregator(num_words=16, seed=3).fit(x[rng.permutation(len(x))]))
    assert np.array_equal(BowAggregator(num_words=16, seed=3, max_training_descriptors=200).fit(x),
                          BowAggregator(num_words=16, seed=3, max_training_descriptors=200).fit(x[::-1]))
    assert BowAggregator(num_words=1000).fit(x[:5]).shape == (5, 9)  # K <= M
    with pytest.raises(ValueError, match="no local descriptors"):
        BowAggregator().fit(np.zeros((0, 8), np.float32))


# --------------------------------------------------------------------------------------------
# Fisher vectors
# --------------------------------------------------------------------------------------------
def test_fisher_vector_hand_case():
    # one standard-normal component, D = 1, x = (1, -1, 2), power 1:
    # G_mu = sum(x) / N = 2/3; G_sigma = (sum(x^2) - N) / (N sqrt 2) = 1 / sqrt 2
    model = FisherModel(np.array([1.0]), np.zeros((1, 1)), np.ones((1, 1))).to_array()
    v = FisherAggregator(power=1.0).encode(np.array([[1.0], [-1.0], [2.0]], np.float32), model)
    g = np.array([2 / 3, 1 / math.sqrt(2)])
    assert np.allclose(v, g / np.linalg.norm(g), atol=1e-6)


def test_fisher_vector_dimension_normalisation_and_power(rng):
    x = rng.normal(size=(800, 32)).astype(np.float32)
    agg = FisherAggregator(num_components=4, pca_dim=8, iterations=5, power=1.0)
    model = agg.fit(x)
    m = FisherModel.from_array(model)
    assert m.means.shape == (4, 8) and m.pca_components.shape == (8, 32) and abs(m.weights.sum() - 1) < 1e-6
    assert np.allclose(m.pca_components @ m.pca_components.T, np.eye(8), atol=1e-5)
    v1 = agg.encode(x[:60], model)
    assert v1.shape == (2 * 4 * 8,) == (agg.global_dim(32),) and abs(np.linalg.norm(v1) - 1) < 1e-5
    v05 = FisherAggregator(num_components=4, pca_dim=8, power=0.5).encode(x[:60], model)
    root = np.sign(v1) * np.sqrt(np.abs(v1))
    assert np.allclose(v05, root / np.linalg.norm(root), atol=1e-5) and abs(np.linalg.norm(v05) - 1) < 1e-5
    assert np.array_equal(agg.encode(np.zeros((0, 32), np.float32), model), np.zeros(64, np.float32))
    no_pca = FisherAggregator(num_components=3, pca_dim=None, iterations=2)
    assert no_pca.encode(x[:10], no_pca.fit(x)).shape == (2 * 3 * 32,)
    with pytest.raises(ValueError, match="Fisher"):
        FisherModel.from_array(np.ones((4, 5), np.float32))  # e.g. a VLAD codebook


def test_fisher_em_recovers_two_gaussians_and_is_deterministic(rng):
    a = rng.normal(size=(400, 2)) * 0.5 + [-5, 0]
    b = rng.normal(size=(400, 2)) * 0.5 + [5, 0]
    x = np.vstack([a, b]).astype(np.float32)
    agg = FisherAggregator(num_components=2, pca_dim=None, iterations=10, seed=1)
    model = agg.fit(x)
    m = FisherModel.from_array(model)
    order = np.argsort(m.means[:, 0])
    assert np.allclose(m.means[order], [[-5, 0], [5, 0]], atol=0.15)
    assert np.allclose(m.variances, 0.25, atol=0.06) and np.allclose(m.weights, 0.5, atol=1e-6)
    assert np.array_equal(model, agg.fit(x[rng.permutation(len(x))]))  # same multiset, same model


# --------------------------------------------------------------------------------------------
# binary descriptors
# --------------------------------------------------------------------------------------------
def test_binary_descriptors_are_unpacked_for_every_aggregator(rng):
    packed = np.array([[0b10100000, 0xFF]], np.uint8)
    assert as_float_descriptors(packed).tolist() == [[1, 0, 1, 0, 0, 0, 0, 0] + [1] * 8]
    as_float = as_float_descriptors(packed.astype(np.float32), binary=True)  # bytes read back as floats
    assert as_float.tolist() == as_float_descriptors(packed).tolist()
    assert as_float_descriptors(np.zeros((0, 32), np.uint8)).shape == (0, 256)
    orb = rng.integers(0, 256, size=(300, 32), dtype=np.uint8)
    bits = as_float_descriptors(orb)
    assert bits.shape == (300, 256) and set(np.unique(bits)) == {0.0, 1.0}
    for agg, dim in ((VladAggregator(num_words=4), 4 * 256), (BowAggregator(num_words=4), 4),
                     (FisherAggregator(num_components=2, pca_dim=8, iterations=2), 2 * 2 * 8)):
        model = agg.fit(orb)
        if isinstance(agg, BowAggregator):
            assert model.shape == (4, 257)
            model = agg.fit_documents(model, [orb[i:i + 1] for i in range(len(orb))])  # one word each
        v = agg.encode(orb[:40], model)
        assert v.shape == (dim,) and abs(np.linalg.norm(v) - 1) < 1e-5
        assert np.array_equal(v, agg.encode(bits[:40], model))  # packed bytes == their bits


def test_vlad_moved_but_same_class():
    from landmark_retrieval.backends.aggregators import VladAggregator as FromSift

    assert FromSift is VladAggregator


# --------------------------------------------------------------------------------------------
# registry, config, stored description
# --------------------------------------------------------------------------------------------
def test_registry_config_and_description():
    assert set(GLOBAL_DESCRIPTORS) >= {"vlad", "bow", "fisher", "colour"}
    for name in GLOBAL_DESCRIPTORS:
        conf = get_config("demo", [f"extract.global_descriptor={name}"]).extract
        agg, image_fn = make_global(conf)
        assert (agg is None) == GLOBAL_DESCRIPTORS[name].from_image and (image_fn is None) != (agg is None)
        desc = make_backend(conf).describe()
        sections = {info.section for info in GLOBAL_DESCRIPTORS.values()} & set(desc)
        assert sections == {GLOBAL_DESCRIPTORS[name].section}
        assert desc.get("global_descriptor") == (None if name == "vlad" else name)  # vlad: as before
    with pytest.raises(ValueError, match="extract.global_descriptor.*vlad"):
        get_config("demo", ["extract.global_descriptor=sparkle"])
    with pytest.raises(ValueError, match="extract.colour.bins"):
        get_config("demo", ["extract.colour.bins=8,8"])
    with pytest.raises(ValueError, match="extract.fisher.pca_dim"):
        get_config("demo", ["extract.fisher.pca_dim=0"])
    assert get_config("demo", ["extract.colour.space=LAB"]).extract.colour.space == "lab"


# --------------------------------------------------------------------------------------------
# the whole pipeline with each global descriptor
# --------------------------------------------------------------------------------------------
FAST = ["verify.enabled=false", "extract.sift.max_keypoints=150", "extract.max_image_size=320",
        "extract.bow.num_words=48", "extract.fisher.num_components=4", "extract.fisher.pca_dim=16",
        "extract.fisher.iterations=5", "extract.colour.bins=6,4,4"]


@pytest.mark.parametrize("backend, method, dim", [("sift", "bow", 48), ("sift", "fisher", 2 * 4 * 16),
                                                  ("sift", "colour", 96), ("orb", "bow", 48)])
def test_run_with_each_global_descriptor(small_dataset, tmp_path, backend, method, dim):
    from landmark_retrieval.pipeline import run

    conf = get_config("demo", FAST + [f"extract.backend={backend}", f"extract.global_descriptor={method}",
                                      "extract.orb.max_keypoints=150"])
    work = tmp_path / "work"
    result = run(conf, small_dataset, work, out=tmp_path / "submission.csv")
    sub = read_submission(result.submission)
    dataset = load_dataset(small_dataset)
    assert sorted(sub) == sorted(dataset.test_ids) and any(v is not None for v in sub.values())
    assert result.metrics is not None and result.metrics["global_gap"] > 0
    for split in ("train", "test"):
        with FeatureStore(feature_dir(work, split)) as store:
            ids, g = store.globals()
            assert g.shape == (len(ids), dim) and np.allclose(np.linalg.norm(g, axis=1), 1, atol=1e-5)
        meta = read_meta(feature_dir(work, split))
        assert meta["global_descriptor"] == method and method in meta and "vlad" not in meta
    codebook = read_array(codebook_path(work), "codebook")
    if method == "colour":
        assert codebook is None  # nothing fitted
    if method == "bow":
        # idf = ln(N / df) with N the train images and df an integer count
        n = len(FeatureStore(feature_dir(work, "train")).local_ids)
        idf = codebook[:, -1].astype(np.float64)
        df = n * np.exp(-idf[idf > 0])
        assert codebook.shape == (48, 1 + (256 if backend == "orb" else 128))  # words (bits for ORB) + idf
        assert np.allclose(df, np.round(df), atol=1e-3) and (df >= 1).all()


def test_fitted_model_does_not_depend_on_shards_or_workers(small_dataset, tmp_path):
    from landmark_retrieval.extract import extract

    models = []
    for shard_size, workers in ((2, 1), (1000, 2)):
        conf = get_config("demo", FAST + ["extract.global_descriptor=bow", f"extract.shard_size={shard_size}",
                                          f"extract.num_workers={workers}", "extract.bow.max_training_descriptors=900"])
        work = tmp_path / f"w{shard_size}"
        extract(conf, small_dataset, work, splits=("train",))
        models.append(read_array(codebook_path(work), "codebook"))
    assert models[0] is not None and np.array_equal(models[0], models[1])
