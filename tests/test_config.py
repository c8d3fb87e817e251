import pytest

from landmark_retrieval.config import BASELINE_SCALES, get_config, list_presets, parse_overrides


def test_kaggle_baseline_preset_matches_the_host_baseline():
    c = get_config("kaggle-baseline")
    assert c.extract.backend == "delg"
    assert c.extract.delg_scales == BASELINE_SCALES == (0.70710677, 1.0, 1.4142135)
    assert c.extract.delg_score_threshold == 175.0 and c.extract.delg_max_feature_num == 1000
    v = c.verify
    assert (v.num_to_rerank, v.max_reprojection_error, v.confidence, v.max_iterations) == (10, 4.0, 0.99, 1000)
    assert v.max_descriptor_distance == 0.9 and v.ratio_test is None and not v.mutual
    assert v.min_matches == 5  # "4 or fewer matches = 0 inliers"
    p = c.predict
    assert (p.top_k, p.max_inlier_score, p.global_weight) == (5, 70, 1.0)


def test_overrides_from_strings_and_dicts_are_typed():
    c = get_config("kaggle-baseline", ["verify.num_to_rerank=20", "verify.ratio_test=0.8",
                                       "extract.delg_scales=1.0,2.0", "verify.mutual=true"])
    assert c.verify.num_to_rerank == 20 and c.verify.ratio_test == 0.8 and c.verify.mutual is True
    assert c.extract.delg_scales == (1.0, 2.0)
    assert c.retrieve.k >= 20
    d = get_config("demo", {"predict": {"top_k": 3}, "verify": {"ratio_test": None}})
    assert d.predict.top_k == 3 and d.verify.ratio_test is None
    # presets are not mutated by overrides
    assert get_config("kaggle-baseline").verify.num_to_rerank == 10


def test_bad_overrides_name_the_problem():
    with pytest.raises(KeyError, match="num_to_rerankk"):
        get_config("default", ["verify.num_to_rerankk=3"])
    with pytest.raises(KeyError, match="Unknown preset"):
        get_config("nope")
    with pytest.raises(ValueError, match="section.option=value"):
        parse_overrides(["num_to_rerank=3"])
    with pytest.raises(ValueError):
        get_config("default", ["verify.mutual=maybe"])


def test_presets_listed():
    assert {"default", "kaggle-baseline", "glr-tuned", "demo"} <= set(list_presets())
