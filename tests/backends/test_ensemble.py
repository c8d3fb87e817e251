"""Ensemble backend: weighted concatenation by hand, local features from one member or another
backend, configuration errors, and whole pipeline runs (embedding global + RootSIFT local)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from landmark_retrieval.backends.embedding import EmbeddingBackend
from landmark_retrieval.backends.ensemble import EnsembleBackend, concat_globals, ensemble_local, ensemble_members
from landmark_retrieval.backends.sift import SiftBackend
from landmark_retrieval.config import EmbeddingConfig, ExtractConfig
from landmark_retrieval.presets import (
    config_diff,
    config_summary,
    get_config,
    read_run_config,
    relevant_settings,
    save_run_config,
)


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    from landmark_retrieval.testing.delg_export import textured_image

    return textured_image(h, w, seed)


def callable_member(fn, **embedding) -> EmbeddingBackend:
    conf = ExtractConfig(backend="embedding", embedding=EmbeddingConfig(resize="none", **embedding))
    return EmbeddingBackend(conf, model=fn)


MEAN = lambda x: x.mean(axis=(1, 2))  # noqa: E731 (mean pixel, 3-d)
STD2 = lambda x: x.std(axis=(1, 2))[:, :2]  # noqa: E731 (std of R and G, 2-d)


# ---------------------------------------------------------------------------------------------
# by hand


def test_concat_globals_by_hand():
    g = concat_globals([np.array([3.0, 4.0]), np.array([0.0, 0.0, 2.0])], [1.0, 2.0])
    # normalize(concat(1 * (0.6, 0.8), 2 * (0, 0, 1))) = (0.6, 0.8, 0, 0, 2) / sqrt(5)
    np.testing.assert_allclose(g, np.array([0.6, 0.8, 0.0, 0.0, 2.0]) / 5 ** 0.5, rtol=1e-6)
    assert g.dtype == np.float32
    # equal weights: each member's share of the cosine is the same, whatever its scale or size
    g = concat_globals([np.array([10.0, 0.0]), np.array([0.0, 0.0, 0.1])], [1.0, 1.0])
    np.testing.assert_allclose(g, [2 ** -0.5, 0, 0, 0, 2 ** -0.5], rtol=1e-6)
    with pytest.raises(ValueError, match="one weight per descriptor"):
        concat_globals([np.ones(2)], [1.0, 2.0])


def test_two_member_descriptor_is_the_weighted_concatenation():
    a, b = callable_member(MEAN, scaling="0-1"), callable_member(STD2)
    ens = EnsembleBackend(members=[("mean", 1.0, a), ("std", 0.5, b)])
    img = textured(40, 50, 1)
    x = img.astype(np.float64)
    ga, gb = unit(x.mean(axis=(0, 1)) / 255), unit(x.std(axis=(0, 1))[:2])  # each member, by hand
    expected = unit(np.concatenate([1.0 * ga, 0.5 * gb]))
    f = ens.extract(img)
    np.testing.assert_allclose(f.global_descriptor, expected, rtol=1e-5)
    assert f.global_descriptor.shape == (5,) and abs(float(np.linalg.norm(f.global_descriptor)) - 1) < 1e-6
    # the members' own descriptors, concatenated the same way
    np.testing.assert_allclose(f.global_descriptor, concat_globals(
        [a.extract(img).global_descriptor, b.extract(img).global_descriptor], [1.0, 0.5]), rtol=1e-6)
    # no local backend: empty local features
    assert ens.local_dim == 0 and len(f) == 0 and f.descriptors.shape == (0, 0)
    assert f.image_size == (50, 40)


def test_local_features_come_from_the_local_backend_only(tmp_path):
    sift = SiftBackend(ExtractConfig(backend="sift"))
    ens = EnsembleBackend(members=[("mean", 1.0, callable_member(MEAN))], local=sift)
    img = textured(160, 200, 3)
    f, ref = ens.extract(img), sift.extract(img)
    assert len(f) == len(ref) > 20 and ens.local_dim == 128
    for name in ("keypoints", "descriptors", "scores", "scales"):
        np.testing.assert_array_equal(getattr(f, name), getattr(ref, name), err_msg=name)
    np.testing.assert_allclose(f.global_descriptor, unit(img.reshape(-1, 3).mean(axis=0)), rtol=1e-5)
    # global_=False: local features only; local=False: the global descriptor only
    g_only, l_only = ens.extract(img, local=False), ens.extract(img, global_=False)
    assert len(g_only) == 0 and g_only.descriptors.shape == (0, 128) and g_only.global_descriptor is not None
    assert l_only.global_descriptor is None and len(l_only) == len(ref)


def test_a_member_without_a_usable_global_descriptor_fails_by_name():
    zero = callable_member(lambda x: np.zeros((1, 3)))
    ens = EnsembleBackend(members=[("mean", 1.0, callable_member(MEAN)), ("zero", 1.0, zero)])
    with pytest.raises(ValueError, match="ensemble member zero gave no usable global descriptor"):
        ens.extract(textured(20, 20))


def test_global_from_local_members_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"members\[1\] \(sift\): the sift backend builds its global descriptor "
                                         r"from local features .*extract\.ensemble\.local=sift"):
        EnsembleBackend(members=[("mean", 1.0, callable_member(MEAN)), ("sift", 1.0, SiftBackend())])
    conf = get_config("demo", ["extract.backend=ensemble", 'extract.ensemble.members=[{"backend": "sift"}]'])
    with pytest.raises(ValueError, match=r"members\[0\] \(sift\): the sift backend builds"):
        EnsembleBackend(conf.extract)
    with pytest.raises(ValueError, match=r"local: the embedding backend gives no local features"):
        EnsembleBackend(members=[("mean", 1.0, callable_member(MEAN))], local=callable_member(MEAN))


def test_a_member_that_cannot_be_built_is_named(tmp_path):
    conf = get_config("demo", ["extract.backend=ensemble", 'extract.ensemble.members=[{"backend": "embedding"}, '
                               f'{{"backend": "embedding", "model_path": "{tmp_path / "gone.keras"}"}}]'])
    with pytest.raises(ValueError, match=r"^extract\.ensemble\.members\[0\] \(embedding1\): The embedding backend "
                                         r"needs a model"):
        EnsembleBackend(conf.extract)
    conf.extract.ensemble.members = conf.extract.ensemble.members[1:]
    with pytest.raises(ValueError, match=r"^extract\.ensemble\.members\[0\] \(embedding\): Embedding model "
                                         r".*gone\.keras does not exist"):
        EnsembleBackend(conf.extract)


# ---------------------------------------------------------------------------------------------
# configuration


MEMBERS = [{"backend": "embedding", "model_path": "a.keras", "embedding": {"input_size": 64}},
           {"backend": "embedding", "model_path": "b.onnx", "weight": 0.5, "name": "vit",
            "embedding": {"layout": "NCHW", "scaling": "imagenet"}},
           {"backend": "delg", "weight": 2, "delg": {"scales": [1.0]}}]


def test_members_from_a_preset_dict_and_from_a_json_override_are_the_same():
    nested = get_config("kaggle-baseline", {"extract": {"backend": "ensemble", "model_path": "delg_dir",
                                                        "embedding": {"scaling": "-1-1"},
                                                        "ensemble": {"members": MEMBERS, "local": "delg"}}})
    strings = get_config("kaggle-baseline", ["extract.backend=ensemble", "extract.model_path=delg_dir",
                                             "extract.embedding.scaling=-1-1",
                                             f"extract.ensemble.members={json.dumps(MEMBERS)}",
                                             "extract.ensemble.local=delg"])
    assert config_diff(nested, strings) == []
    members = ensemble_members(strings.extract)
    assert [(m.name, m.weight, m.extract.backend) for m in members] == [
        ("embedding", 1.0, "embedding"), ("vit", 0.5, "embedding"), ("delg", 2.0, "delg")]
    first, vit, delg = (m.extract for m in members)
    # a member's own settings over the ensemble's extract settings
    assert (first.model_path, first.embedding.input_size, first.embedding.scaling) == ("a.keras", 64, "-1-1")
    assert (vit.embedding.layout, vit.embedding.scaling, vit.embedding.input_size) == ("NCHW", "imagenet", None)
    assert delg.model_path == "delg_dir" and delg.delg.scales == (1.0,) and delg.delg.score_threshold == 175.0
    assert ensemble_local(strings.extract, members) == (2, None)
    # the summary prints the members as the JSON --set takes
    assert f"extract.ensemble.members={json.dumps(MEMBERS)}" in config_summary(strings)


def test_saved_ensemble_configuration_reads_back_equal(tmp_path):
    conf = get_config("demo", {"extract": {"backend": "ensemble", "ensemble": {
        "members": [{"backend": "embedding", "model_path": Path("m.keras"), "embedding": {"scales": (1.0, 0.5)}}],
        "local": "sift"}}})
    assert conf.extract.ensemble.members == ({"backend": "embedding", "model_path": "m.keras",
                                              "embedding": {"scales": [1.0, 0.5]}},)
    save_run_config(tmp_path, conf)
    assert config_diff(read_run_config(tmp_path), conf) == []
    relevant = relevant_settings(conf)["extract"]
    assert {"ensemble", "embedding", "sift", "vlad", "model_path"} <= set(relevant) and "delg" not in relevant
    local_index, local_conf = ensemble_local(conf.extract, ensemble_members(conf.extract))
    assert local_index is None and local_conf.backend == "sift" and local_conf.ensemble.members == ()


@pytest.mark.parametrize("members, local, error, message", [
    ([], None, ValueError, r"extract\.ensemble\.members: the ensemble backend needs at least one member, e\.g\. "
                           r"--set 'extract\.ensemble\.members=\[\{\"backend\": \"embedding\""),
    ('[{"backend": "embedding"', None, ValueError, r"extract\.ensemble\.members: expected a JSON list of objects.*"
                                                   r"not valid JSON"),
    ('["embedding"]', None, ValueError, r"extract\.ensemble\.members\[0\]: expected an object"),
    ([{"model_path": "m.keras"}], None, ValueError, r"members\[0\]\.backend: missing; choose one of: sift, orb, "
                                                    r"delg, embedding, xfeat, disk, aliked$"),
    ([{"backend": "surf"}], None, ValueError, r"members\[0\]\.backend: unknown backend 'surf'"),
    ([{"backend": "ensemble"}], None, ValueError, r"an ensemble cannot be a member of an ensemble"),
    ([{"backend": "embedding", "weight": 0}], None, ValueError, r"members\[0\]\.weight: expected a positive number"),
    ([{"backend": "embedding", "weight": "heavy"}], None, ValueError, r"members\[0\]\.weight: expected a number"),
    ([{"backend": "embedding", "shard_size": 3}], None, KeyError,
     r"Unknown option extract\.ensemble\.members\[0\]\.shard_size; a member takes: backend, weight, name, model_path"),
    ([{"backend": "embedding", "embedding": {"scaling": "0-2"}}], None, ValueError,
     r"extract\.ensemble\.members\[0\]\.embedding\.scaling: expected one of"),
    ([{"backend": "embedding", "embedding": {"scalin": "0-1"}}], None, KeyError,
     r"valid options of extract\.ensemble\.members\[0\]\.embedding: model_path, format"),
    ([{"backend": "embedding", "name": "a"}, {"backend": "delg", "name": "a"}], None, ValueError,
     r"members\[1\]\.name: 'a' is the name of another member"),
    ([{"backend": "embedding"}, {"backend": "embedding"}], "embedding", ValueError,
     r"extract\.ensemble\.local: 2 members use the embedding backend \(embedding1, embedding2\)"),
    ([{"backend": "embedding"}], "surf", ValueError,
     r"extract\.ensemble\.local: 'surf' is neither a member \(embedding\) nor a backend"),
])
def test_bad_ensembles_name_the_member_and_option(members, local, error, message):
    value = members if isinstance(members, str) else json.dumps(members)
    overrides = ["extract.backend=ensemble", f"extract.ensemble.members={value}"]
    if local:
        overrides.append(f"extract.ensemble.local={local}")
    with pytest.raises(error, match=message):
        get_config("demo", overrides)


def test_default_member_names_and_local_by_name():
    conf = get_config("demo", {"extract": {"backend": "ensemble", "ensemble": {
        "members": [{"backend": "embedding"}, {"backend": "delg"}, {"backend": "embedding", "name": "vit"}],
        "local": "none"}}})
    members = ensemble_members(conf.extract)
    assert [m.name for m in members] == ["embedding", "delg", "vit"]
    assert ensemble_local(conf.extract, members) == (None, None)
    conf.extract.ensemble.local = "vit"
    assert ensemble_local(conf.extract, members) == (2, None)


# ---------------------------------------------------------------------------------------------
# real models


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory) -> Dict[str, Path]:
    pytest.importorskip("tensorflow")
    from landmark_retrieval.testing import export_embedding_model

    root = tmp_path_factory.mktemp("ensemble_models")
    return {"a": export_embedding_model(root / "a", seed=0, dim=32, formats=("keras",))["keras"],
            "b": export_embedding_model(root / "b", seed=1, dim=16, formats=("savedmodel",))["savedmodel"]}


def _members(models: Dict[str, Path]) -> list:
    return [{"backend": "embedding", "model_path": str(models["a"]), "weight": 1.0},
            {"backend": "embedding", "model_path": str(models["b"]), "weight": 0.5, "name": "b",
             "embedding": {"scaling": "0-1", "flip": True}}]


@pytest.mark.slow
def test_ensemble_of_two_model_files_equals_the_hand_concatenation(keras_models):
    from landmark_retrieval.backends.registry import make_backend

    conf = get_config("demo", {"extract": {"backend": "ensemble", "embedding": {"input_size": 48},
                                           "ensemble": {"members": _members(keras_models), "local": "sift"}}})
    ens = make_backend(conf.extract)
    assert isinstance(ens, EnsembleBackend)
    alone_a = make_backend(ExtractConfig(backend="embedding", model_path=str(keras_models["a"]),
                                         embedding=EmbeddingConfig(input_size=48)))
    alone_b = make_backend(ExtractConfig(backend="embedding", model_path=str(keras_models["b"]),
                                         embedding=EmbeddingConfig(input_size=48, scaling="0-1", flip=True)))
    img = textured(90, 120, 5)
    ga, gb = alone_a.extract(img).global_descriptor, alone_b.extract(img).global_descriptor
    f = ens.extract(img)
    np.testing.assert_allclose(f.global_descriptor, unit(np.concatenate([ga, 0.5 * gb])), atol=1e-6)
    assert f.global_descriptor.shape == (48,)
    ref = SiftBackend(conf.extract).extract(img)
    np.testing.assert_array_equal(f.descriptors, ref.descriptors)
    np.testing.assert_array_equal(f.keypoints, ref.keypoints)
    d = ens.describe()
    assert [m["name"] for m in d["members"]] == ["embedding", "b"] and d["members"][1]["weight"] == 0.5
    assert d["members"][0]["backend"] == alone_a.describe() and d["members"][1]["backend"] == alone_b.describe()
    assert d["local"] == SiftBackend(conf.extract).describe() and d["local_member"] is None


@pytest.mark.slow
def test_local_features_of_a_delg_member_equal_the_delg_backend(keras_models, tmp_path):
    from landmark_retrieval.backends.registry import make_backend
    from landmark_retrieval.testing import export_test_model

    delg_dir = export_test_model(tmp_path / "delg", style="tf1", global_dim=64)
    conf = get_config("kaggle-baseline", {"extract": {
        "backend": "ensemble", "model_path": str(delg_dir), "delg": {"score_threshold": 100.0},
        "embedding": {"input_size": 48},
        "ensemble": {"members": [{"backend": "embedding", "model_path": str(keras_models["a"])},
                                 {"backend": "delg", "weight": 0.5}], "local": "delg"}}})
    ens = make_backend(conf.extract)
    delg = make_backend(ExtractConfig(backend="delg", model_path=str(delg_dir), delg=conf.extract.delg))
    emb = make_backend(ExtractConfig(backend="embedding", model_path=str(keras_models["a"]),
                                     embedding=EmbeddingConfig(input_size=48)))
    img = textured(200, 240, 6)
    f, ref = ens.extract(img), delg.extract(img)
    assert len(f) == len(ref) > 0 and ens.local_dim == 128 and ens.describe()["local_member"] == "delg"
    for name in ("keypoints", "descriptors", "scores", "scales"):
        np.testing.assert_allclose(getattr(f, name), getattr(ref, name), rtol=1e-6, atol=1e-6, err_msg=name)
    expected = unit(np.concatenate([emb.extract(img).global_descriptor, 0.5 * ref.global_descriptor]))
    np.testing.assert_allclose(f.global_descriptor, expected, atol=1e-6)
    assert f.global_descriptor.shape == (32 + 64,)


@pytest.mark.slow
def test_cli_run_with_an_embedding_global_and_sift_local(small_dataset, keras_models, tmp_path, capsys):
    from landmark_retrieval.cli import main
    from landmark_retrieval.io.dataset import load_dataset
    from landmark_retrieval.io.layout import feature_dir
    from landmark_retrieval.io.store import FeatureStore, read_meta
    from landmark_retrieval.io.submission import read_submission

    members = json.dumps([{"backend": "embedding", "model_path": str(keras_models["a"]),
                           "embedding": {"input_size": 64, "scaling": "-1-1"}}])
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    args = ["run", "--data", str(small_dataset), "--work", str(work), "--out", str(out), "--preset", "demo",
            "--backend", "ensemble", "--set", f"extract.ensemble.members={members}",
            "--set", "extract.ensemble.local=sift", "--workers", "1"]
    assert main(args) == 0
    dataset = load_dataset(small_dataset)
    sub = read_submission(out)
    assert list(sub) == dataset.test_ids and all(v is not None for v in sub.values())
    assert "verified_gap" in capsys.readouterr().out
    meta = read_meta(feature_dir(work, "test"))
    assert meta["name"] == "ensemble" and meta["local"]["name"] == "sift"
    assert meta["members"][0]["backend"]["embedding"]["scaling"] == "-1-1"
    with FeatureStore(feature_dir(work, "train")) as train:
        ids, g = train.globals()
        assert len(ids) == len(dataset.train_ids) and g.shape[1] == 32
        np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-5)
        image_id = dataset.train_ids[0]
        feats = train.local(image_id)
    from PIL import Image

    with Image.open(dataset.path("train", image_id)) as im:
        ref = SiftBackend(get_config("demo").extract).extract(np.asarray(im.convert("RGB")))
    np.testing.assert_array_equal(feats.descriptors, ref.descriptors)
    # re-ranking used the RootSIFT features: some pair has inliers
    verification = (work / "verification.csv").read_text().splitlines()
    assert len(verification) > 1 and any(int(line.rsplit(",", 1)[1]) > 0 for line in verification[1:])
    # a second run finds everything done; a changed member setting is detected in meta.json
    assert main(args) == 0 and read_submission(out) == sub
    changed = members.replace('"-1-1"', '"0-1"')
    assert main(args[:-6] + ["--set", f"extract.ensemble.members={changed}", "--set",
                             "extract.ensemble.local=sift", "--workers", "1"]) != 0


@pytest.mark.slow
def test_pipeline_run_with_the_embedding_backend_alone(small_dataset, keras_models, tmp_path):
    from landmark_retrieval.io.dataset import load_dataset
    from landmark_retrieval.io.submission import read_submission
    from landmark_retrieval.pipeline import run

    conf = get_config("embedding", {"extract": {"model_path": str(keras_models["b"]),
                                                "embedding": {"input_size": 64, "scales": [1.0, 0.75]}}})
    result = run(conf, small_dataset, tmp_path / "work", tmp_path / "s.csv")
    sub = read_submission(result.submission)
    assert list(sub) == load_dataset(small_dataset).test_ids and all(v is not None for v in sub.values())
    assert not (tmp_path / "work" / "verification.csv").exists()  # no local features: no verification
