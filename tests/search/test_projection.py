"""The learned projection of global descriptors (``retrieve.projection``): losses, pairs, views,
training, determinism, the retrieve step's reuse of saved weights, and its errors.

TensorFlow is imported once (module-scoped fixtures); trainings are tiny (few epochs, small dims).
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np
import pytest

from landmark_retrieval.presets import config_summary, get_config, read_run_config
from landmark_retrieval.search.projection import (
    Projector,
    augment,
    contrastive_loss,
    forward,
    import_tensorflow,
    init_layers,
    mine_pairs,
    nt_xent_loss,
    train_siamese,
    train_simclr,
)
from landmark_retrieval.search.projection_fit import fit_projection, read_projector, write_projector

FAST = {"dim": 8, "epochs": 3, "batch_size": 16, "max_images": 40}


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _toy(seed=0, classes=4, per=10, dim=16):
    """Separable toy descriptors: class centres plus noise that dominates the raw cosine."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 0.6
    labels = np.repeat(np.arange(classes), per)
    x = centres[labels] + rng.normal(size=(len(labels), dim))
    return _unit(x).astype(np.float32), labels


def test_losses_on_hand_made_rows():
    a = np.array([[1, 0], [1, 0], [1, 0]], np.float32)
    b = np.array([[0, 1], [0, 1], [1, 0]], np.float32)
    # same: d^2 = 2; other landmark beyond the margin: 0; identical rows of other landmarks: margin^2
    assert contrastive_loss(a, b, np.array([1, 0, 0]), 0.7) == pytest.approx((2 + 0 + 0.49) / 3)
    z = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    # every row: its partner at similarity 1, the two others at 0 (temperature 1)
    assert nt_xent_loss(z, np.array([0, 0, 1, 1]), 1.0) == pytest.approx(math.log(math.e + 2) - 1)


def test_mine_pairs_takes_partners_and_the_nearest_other_landmark():
    x = _unit(np.array([[1, 0], [1, 0.2], [1, 0.5], [0, 1]], np.float32))
    labels = np.array([0, 0, 1, 1])
    a, b, y = mine_pairs(x, labels, positives=1, negatives=1, max_pairs=100, rng=np.random.default_rng(0))
    pairs = sorted(zip(a.tolist(), b.tolist(), y.tolist()))
    # positives: the only partner; negatives: the nearest image of the other landmark
    assert pairs == [(0, 1, 1.0), (0, 2, 0.0), (1, 0, 1.0), (1, 2, 0.0), (2, 1, 0.0), (2, 3, 1.0),
                     (3, 1, 0.0), (3, 2, 1.0)]
    a2, _, _ = mine_pairs(x, labels, positives=1, negatives=1, max_pairs=3, rng=np.random.default_rng(0))
    assert len(a2) == 3


def test_augment_is_deterministic_per_seed():
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    one = augment(image, np.random.default_rng([0, 7]))
    assert one.dtype == np.uint8 and one.ndim == 3 and max(one.shape[:2]) == 80
    assert np.array_equal(one, augment(image, np.random.default_rng([0, 7])))
    assert not np.array_equal(one, augment(image, np.random.default_rng([1, 7])))


def test_projector_shapes_and_file_round_trip(tmp_path):
    p = Projector(init_layers(6, 3, 5, seed=0), "siamese")
    out = p.apply(np.ones((4, 6), np.float32))
    assert out.shape == (4, 3) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)
    assert p.apply(np.zeros((0, 6), np.float32)).shape == (0, 3)
    with pytest.raises(ValueError, match=r"shape \(N, 6\)"):
        p.apply(np.ones((2, 5), np.float32))
    write_projector(tmp_path / "p.h5", p, [1.0, 0.5])
    back = read_projector(tmp_path / "p.h5")
    assert back.method == "siamese" and all(np.array_equal(u, v) for lu, lv in zip(p.layers, back.layers)
                                            for u, v in zip(lu, lv))


def test_pca_initialisation_starts_from_the_principal_directions():
    x = np.array([[2, 0, 0], [-2, 0, 0], [0, 1, 0], [0, -1, 0], [1, 1, 1]], np.float32)
    (w, b), = init_layers(3, 2, 0, seed=0, x=x)
    # directions of the covariance's two largest eigenvalues, largest component positive
    values, vectors = np.linalg.eigh(np.cov(x.T, bias=True))
    expected = vectors[:, np.argsort(values)[::-1][:2]]
    expected *= np.sign(expected[np.argmax(np.abs(expected), axis=0), [0, 1]])
    assert np.allclose(w, expected, atol=1e-5)
    assert np.allclose(forward([(w, b)], x), (x - x.mean(axis=0)) @ w, atol=1e-5)
    # more outputs than the sample has directions: the others stay random, unit norm
    (w2, _), _ = init_layers(4, 3, 5, seed=0, x=np.eye(3, 4, dtype=np.float32))
    assert np.allclose(np.linalg.norm(w2, axis=0), 1, atol=1e-5)
    assert np.allclose(w2[:, :2].T @ w2[:, :2], np.eye(2), atol=1e-5)


def test_missing_tensorflow_names_the_option_and_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ImportError, match=r"retrieve\.projection\.method=siamese.*pip install"):
        import_tensorflow("siamese")


def test_config_section_validates_and_round_trips(tmp_path):
    conf = get_config("demo", ["retrieve.projection.method=SimCLR", "retrieve.projection.hidden_dim=64"])
    assert conf.retrieve.projection.method == "simclr" and conf.retrieve.projection.hidden_dim == 64
    assert "retrieve.projection.method=simclr" in config_summary(conf)
    (tmp_path / "config.json").write_text(conf.to_json())
    assert read_run_config(tmp_path) == conf
    with pytest.raises(ValueError, match="retrieve.projection.method: expected none or one of siamese, simclr"):
        get_config("demo", ["retrieve.projection.method=pca"])
    with pytest.raises(ValueError, match="retrieve.projection.temperature"):
        get_config("demo", ["retrieve.projection.temperature=0"])


def test_siamese_training_lowers_the_contrastive_loss_and_is_deterministic(tf):
    x, labels = _toy()
    a, b, y = mine_pairs(x, labels, 4, 4, 1000, np.random.default_rng(0))
    p = get_config("demo", {"retrieve": {"projection": {"method": "siamese", "dim": 8, "epochs": 15,
                                                        "batch_size": 32, "learning_rate": 0.01}}}).retrieve.projection

    def loss(layers):
        z = _unit(forward(layers, x))
        return contrastive_loss(z[a], z[b], y, p.margin)

    result = train_siamese(x, a, b, y, p)
    before, after = loss(init_layers(16, 8, 0, p.seed)), loss(result.layers)
    assert after < 0.6 * before and result.losses[-1] < result.losses[0]
    again = train_siamese(x, a, b, y, p)
    assert all(u.tobytes() == v.tobytes() for lu, lv in zip(result.layers, again.layers) for u, v in zip(lu, lv))


def test_simclr_training_lowers_nt_xent(tf):
    x, _ = _toy(per=3)
    rng = np.random.default_rng(1)
    views = np.stack([x, _unit(x + 0.3 * rng.normal(size=x.shape)), _unit(x + 0.3 * rng.normal(size=x.shape))], 1)
    p = get_config("demo", {"retrieve": {"projection": {"method": "simclr", "dim": 8, "hidden_dim": 16, "epochs": 20,
                                                        "batch_size": 12, "learning_rate": 0.01}}}).retrieve.projection
    groups = np.repeat(np.arange(len(x)), 3)

    def loss(layers):
        return nt_xent_loss(_unit(forward(layers, views.reshape(-1, 16))), groups, p.temperature)

    result = train_simclr(views.astype(np.float32), p)
    assert loss(result.layers) < 0.8 * loss(init_layers(16, 8, 16, p.seed))


# --------------------------------------------------------------------------------------------
# The retrieve step and whole runs on the small generated dataset
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def siamese_run(small_dataset, tmp_path_factory, tf):
    """A CLI run with ``--set retrieve.projection.method=siamese`` (and small settings)."""
    from landmark_retrieval.cli import main

    work = tmp_path_factory.mktemp("projection") / "work"
    out = work.parent / "submission.csv"
    sets = ["retrieve.projection.method=siamese"] + [f"retrieve.projection.{k}={v}" for k, v in FAST.items()]
    args = ["run", "--data", str(small_dataset), "--work", str(work), "--out", str(out), "--preset", "demo",
            *[a for s in sets + ["verify.num_to_rerank=3"] for a in ("--set", s)]]
    assert main(args) == 0
    return work, out, args


def test_run_with_siamese_projection(small_dataset, siamese_run):
    from landmark_retrieval.io.dataset import load_dataset
    from landmark_retrieval.io.layout import projection_path, read_stamp, retrieval_path
    from landmark_retrieval.io.submission import read_submission

    work, out, _ = siamese_run
    assert list(read_submission(out)) == load_dataset(small_dataset).test_ids
    assert read_run_config(work).retrieve.projection.method == "siamese"
    stamp = read_stamp(retrieval_path(work))["projection"]
    assert stamp["method"] == "siamese" and stamp["dim"] == FAST["dim"] and stamp["split"] == "train"
    assert read_projector(projection_path(work)).dim == FAST["dim"]


def test_a_second_run_reuses_the_weights(siamese_run, caplog):
    from landmark_retrieval.cli import main
    from landmark_retrieval.io.layout import projection_path, retrieval_path

    work, out, args = siamese_run
    weights, retrieval = projection_path(work), retrieval_path(work)
    mtimes = weights.stat().st_mtime_ns, retrieval.stat().st_mtime_ns
    caplog.clear()
    assert main(args) == 0
    assert (weights.stat().st_mtime_ns, retrieval.stat().st_mtime_ns) == mtimes
    assert "Training the projection" not in caplog.text
    # the retrieve step itself loads the saved weights when it has to run again
    from landmark_retrieval.retrieve import retrieve

    conf = read_run_config(work)
    caplog.clear()
    retrieve(conf, args[2], work, overwrite=True)
    assert "Projection (siamese) is up to date" in caplog.text and weights.stat().st_mtime_ns == mtimes[0]


def test_same_settings_give_identical_weights_and_retrieval(small_dataset, siamese_run, tmp_path, caplog):
    """Retraining from scratch in another work directory gives the same bytes."""
    import shutil

    import h5py

    from landmark_retrieval.io.layout import projection_path, retrieval_path
    from landmark_retrieval.retrieve import retrieve

    work, _, _ = siamese_run
    other = tmp_path / "work"
    shutil.copytree(work / "features", other / "features")
    projection_path(other).unlink()
    conf = read_run_config(work)
    caplog.clear()
    retrieve(conf, small_dataset, other)
    assert "Training the projection" in caplog.text
    assert projection_path(other).read_bytes() == projection_path(work).read_bytes()
    with h5py.File(retrieval_path(work)) as a, h5py.File(retrieval_path(other)) as b:
        for name in ("indices", "scores"):
            assert a[name][()].tobytes() == b[name][()].tobytes()


def test_changing_the_projection_recomputes_retrieval_and_simclr_run(small_dataset, siamese_run, tmp_path, caplog):
    """simclr in a copy of the run: the retrieval stamp changes, weights are trained on views."""
    import shutil

    from landmark_retrieval.io.layout import projection_path, read_stamp, retrieval_path
    from landmark_retrieval.io.submission import read_submission
    from landmark_retrieval.pipeline import run

    work, _, _ = siamese_run
    other = tmp_path / "work"
    shutil.copytree(work, other)
    conf = get_config(read_run_config(work), {"retrieve": {"projection": {"method": "simclr", "views": 1}}})
    caplog.clear()
    result = run(conf, small_dataset, other, tmp_path / "sub.csv")
    assert "Retrieving again" in caplog.text and "projection" in caplog.text
    assert "Training the projection (simclr" in caplog.text
    assert len(read_submission(result.submission)) == len(read_submission(siamese_run[1]))
    assert read_stamp(retrieval_path(other))["projection"]["method"] == "simclr"
    assert json.loads(projection_path(other).with_suffix(".json").read_text())["views"] == 1


def test_siamese_without_train_labels_names_the_option(small_dataset, siamese_run):
    from landmark_retrieval.io.dataset import load_dataset

    dataset = load_dataset(small_dataset)
    unlabelled = dataclasses.replace(dataset, train=dataset.train.iloc[:0])
    conf = read_run_config(siamese_run[0])
    with pytest.raises(ValueError, match=r"retrieve\.projection\.method=siamese.*train\.csv.*simclr"):
        fit_projection(conf, unlabelled, siamese_run[0])
