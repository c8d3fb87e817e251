import dataclasses
import json
import logging

import pytest

from landmark_retrieval.backends.registry import BACKENDS
from landmark_retrieval.config import BASELINE_SCALES, Config, ExtractConfig, extract_sections
from landmark_retrieval.io.layout import config_path
from landmark_retrieval.overrides import parse_overrides
from landmark_retrieval.presets import (
    PRESETS,
    config_diff,
    config_summary,
    format_changes,
    get_config,
    list_presets,
    read_run_config,
    relevant_settings,
    resolve_run_config,
    save_run_config,
)


def test_kaggle_baseline_preset_matches_the_host_baseline():
    c = get_config("kaggle-baseline")
    assert c.extract.backend == "delg" and c.extract.train_local == "candidates"
    d = c.extract.delg
    assert d.scales == BASELINE_SCALES == (0.70710677, 1.0, 1.4142135)
    assert d.score_threshold == 175.0 and d.max_keypoints == 1000
    assert d.global_scales_ind is None and d.local and d.global_
    v = c.verify
    assert (v.num_to_rerank, v.max_reprojection_error, v.confidence, v.max_iterations) == (10, 4.0, 0.99, 1000)
    assert v.max_descriptor_distance == 0.9 and v.ratio_test is None and not v.mutual
    assert v.min_matches == 5  # "4 or fewer matches = 0 inliers"
    p = c.predict
    assert (p.top_k, p.max_inlier_score, p.global_weight) == (5, 70, 1.0)


def test_backend_sections_are_nested_dataclasses():
    c = get_config("demo")
    assert (c.extract.sift.max_keypoints, c.extract.vlad.num_words, c.extract.vlad.seed) == (1000, 32, 0)
    assert set(extract_sections()) == {"sift", "learned", "orb", "vlad", "bow", "fisher", "colour", "delg", "embedding",
                                       "ensemble"}
    for name in extract_sections():
        assert dataclasses.is_dataclass(getattr(c.extract, name))
    # the same idea has the same name in every backend
    assert c.extract.sift.max_keypoints == c.extract.delg.max_keypoints == 1000
    # every section belongs to a registered backend, and every backend's sections exist
    assert {s for info in BACKENDS.values() for s in info.sections} == set(extract_sections())


def test_overrides_from_strings_and_dicts_are_typed():
    c = get_config("kaggle-baseline", ["verify.num_to_rerank=20", "verify.ratio_test=0.8",
                                       "extract.delg.scales=1.0,2.0", "verify.mutual=true",
                                       "extract.delg.global=false", "extract.sift.max_keypoints=500"])
    assert c.verify.num_to_rerank == 20 and c.verify.ratio_test == 0.8 and c.verify.mutual is True
    assert c.extract.delg.scales == (1.0, 2.0) and c.extract.delg.global_ is False
    assert c.extract.sift.max_keypoints == 500
    assert c.retrieve.k >= 20
    d = get_config("demo", {"predict": {"top_k": 3}, "verify": {"ratio_test": None},
                            "extract": {"sift": {"max_keypoints": 500}, "delg": {"scales": [0.5, 1]}}})
    assert d.predict.top_k == 3 and d.verify.ratio_test is None
    assert d.extract.sift.max_keypoints == 500 and d.extract.sift.contrast_threshold == 0.02
    assert d.extract.delg.scales == (0.5, 1.0)
    # presets are not mutated by overrides
    assert get_config("kaggle-baseline").verify.num_to_rerank == 10
    assert get_config("demo").extract.sift.max_keypoints == 1000
    assert parse_overrides(["extract.sift.max_keypoints=500", "verify.k=1"]) == {
        "extract": {"sift": {"max_keypoints": "500"}}, "verify": {"k": "1"}}


def test_bad_overrides_name_the_problem():
    with pytest.raises(KeyError, match="num_to_rerankk"):
        get_config("default", ["verify.num_to_rerankk=3"])
    with pytest.raises(KeyError, match=r"valid options of extract\.sift: max_keypoints, contrast_threshold"):
        get_config("default", {"extract": {"sift": {"max_keypointz": 3}}})
    with pytest.raises(KeyError, match=r"extract\.sift_max_keypoints is now extract\.sift\.max_keypoints"):
        get_config("default", ["extract.sift_max_keypoints=3"])
    with pytest.raises(KeyError, match="Unknown preset"):
        get_config("nope")
    with pytest.raises(KeyError, match="Unknown config section 'bogus'"):
        get_config("default", ["bogus.x=1"])
    with pytest.raises(ValueError, match="section.option=value"):
        parse_overrides(["num_to_rerank=3"])
    with pytest.raises(ValueError, match=r"^verify\.num_to_rerank: expected an integer, got 'abc'$"):
        get_config("default", ["verify.num_to_rerank=abc"])
    with pytest.raises(ValueError, match=r"verify\.num_to_rerank: expected an integer, got 2\.5"):
        get_config("default", {"verify": {"num_to_rerank": 2.5}})
    with pytest.raises(ValueError, match=r"verify\.mutual: expected true or false, got 'maybe'"):
        get_config("default", ["verify.mutual=maybe"])
    with pytest.raises(ValueError, match=r"verify\.confidence: expected a number"):
        get_config("default", ["verify.confidence=high"])
    with pytest.raises(ValueError, match=r"extract\.delg\.scales: expected comma-separated numbers"):
        get_config("default", ["extract.delg.scales=a,b"])
    with pytest.raises(ValueError, match=r"verify\.num_to_rerank: .*cannot be none"):
        get_config("default", ["verify.num_to_rerank=none"])
    with pytest.raises(ValueError, match=r"extract\.sift is a section"):
        get_config("default", ["extract.sift=3"])
    with pytest.raises(ValueError, match=r"extract\.backend: unknown backend 'surf'; choose one of: sift, orb, delg"):
        get_config("default", ["extract.backend=surf"])


def test_presets_listed_and_described():
    assert {"default", "kaggle-baseline", "glr-tuned", "demo"} <= set(list_presets())
    for preset in PRESETS.values():
        assert preset.description and "\n" not in preset.description
        assert preset.summary and "\n" not in preset.summary and len(preset.summary) < len(preset.description)


def test_relevant_settings_of_a_backend():
    sift = relevant_settings(get_config("demo"))["extract"]
    assert "sift" in sift and "vlad" in sift and "delg" not in sift and "model_path" not in sift
    delg = relevant_settings(get_config("kaggle-baseline"))["extract"]
    assert "delg" in delg and "model_path" in delg and "sift" not in delg and "vlad" not in delg
    assert "delg" in get_config("demo").to_dict()["extract"]  # the full dict keeps everything


def test_config_diff_and_summary():
    a, b = get_config("demo"), get_config("demo", ["verify.num_to_rerank=20", "extract.sift.max_keypoints=5"])
    assert config_diff(a, b) == [("extract.sift.max_keypoints", 1000, 5), ("verify.num_to_rerank", 10, 20)]
    assert config_diff(a, a) == []
    assert format_changes([("verify.num_to_rerank", 10, 20)]) == "verify.num_to_rerank: 10 -> 20"
    assert ("name", "demo", "default") in config_diff(a, get_config("default"))
    assert config_summary(b) == "preset demo + extract.sift.max_keypoints=5 verify.num_to_rerank=20"
    assert config_summary(a) == "preset demo (unchanged)"


def test_run_config_is_saved_resumed_and_overridden(tmp_path, caplog):
    work = tmp_path / "w"
    assert read_run_config(work) is None
    # the first step in a fresh work directory saves its configuration, without a warning
    with caplog.at_level(logging.WARNING, "landmark_retrieval"):
        conf = resolve_run_config(work, "demo", ["verify.num_workers=1"])
    assert caplog.records == [] and read_run_config(work) == conf
    # later steps continue with it
    assert resolve_run_config(work) == conf
    assert resolve_run_config(work, save=False) == conf
    # an override changes it, with one warning naming exactly the changed key, and is saved
    caplog.clear()
    with caplog.at_level(logging.WARNING, "landmark_retrieval"):
        changed = resolve_run_config(work, overrides=["verify.num_to_rerank=20"])
    assert changed.verify.num_to_rerank == 20 and changed.verify.num_workers == 1 and changed.name == "demo"
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().endswith("verify.num_to_rerank: 10 -> 20")
    assert read_run_config(work) == changed
    # a read-only command (save=False) warns but leaves the saved file alone
    caplog.clear()
    with caplog.at_level(logging.WARNING, "landmark_retrieval"):
        resolve_run_config(work, overrides={"predict": {"top_k": 3}}, save=False)
    assert "predict.top_k: 5 -> 3" in caplog.text and read_run_config(work) == changed
    # an explicit preset replaces the saved configuration
    assert resolve_run_config(work, "default").name == "default"
    assert json.loads(config_path(work).read_text())["name"] == "default"
    assert save_run_config(work, get_config("default")) == []


def test_saved_configuration_of_an_earlier_version_is_upgraded(tmp_path):
    old = Config().to_dict()
    extract = old["extract"]
    for section in extract_sections():
        del extract[section]
    extract.update(backend="sift", sift_max_keypoints=321, vlad_num_words=16, seed=4,
                   delg_max_feature_num=77, delg_global=False, delg_scales=[1.0])
    config_path(tmp_path).write_text(json.dumps(old))
    conf = read_run_config(tmp_path)
    assert (conf.extract.sift.max_keypoints, conf.extract.vlad.num_words, conf.extract.vlad.seed) == (321, 16, 4)
    assert conf.extract.delg.max_keypoints == 77 and conf.extract.delg.global_ is False
    assert conf.extract.delg.scales == (1.0,)


def test_unreadable_saved_configuration_names_the_file(tmp_path, caplog):
    config_path(tmp_path).write_text('{"verify": {"bogus": 1}}')
    with pytest.raises(ValueError, match=r"config\.json.*bogus.*--preset"):
        resolve_run_config(tmp_path)
    # an explicit preset replaces it (with a warning)
    assert resolve_run_config(tmp_path, "demo").name == "demo"
    assert read_run_config(tmp_path).name == "demo"


def test_extract_config_defaults_construct_without_arguments():
    e = ExtractConfig(backend="delg", model_path="m")
    assert e.delg.max_keypoints == 1000 and e.sift.max_keypoints == 1000


def test_the_learned_presets():
    """learned-fast and learned-best start from classical-best and change only the local features
    and verification; kaggle-learned verifies DELG's candidates with ALIKED + LightGlue."""
    from landmark_retrieval.presets import config_diff, local_backend

    base = get_config("classical-best")
    for name, backend, matcher in (("learned-fast", "xfeat", "nn"), ("learned-best", "aliked", "lightglue")):
        conf = get_config(name)
        changed = {k.split(".")[0] + "." + k.split(".")[1] for k, _, _ in config_diff(base, conf) if k != "name"}
        assert changed <= {"extract.backend", "extract.learned", "verify.geometry", "verify.max_reprojection_error",
                           "verify.matcher"}, (name, changed)
        assert (conf.extract.backend, conf.verify.matcher, conf.verify.geometry) == (backend, matcher, "fundamental")
    kaggle = get_config("kaggle-learned")
    assert local_backend(kaggle.extract) == "aliked" and kaggle.verify.matcher == "lightglue"
    assert [m["backend"] for m in kaggle.extract.ensemble.members] == ["delg"] and not kaggle.extract.delg.local
