"""The learned matcher (LightGlue): weight names, which LightGlue a run's features get, and the
checks made before any work. The matches themselves are tested end to end with the learned
backends (tests/backends/test_learned.py)."""
from __future__ import annotations

import pytest

from landmark_retrieval.matching.lightglue import features_backend, lightglue_kind, renamed
from landmark_retrieval.presets import get_config


def test_lightglue_keys_of_earlier_releases_are_renamed():
    state = {"self_attn.0.Wqkv.weight": 1, "cross_attn.1.to_out.bias": 2, "matcher.log_assignment.0.x": 3,
             "self_attn.10.a": 4, "posenc.Wr.weight": 5}
    assert renamed(state, 2) == {"transformers.0.self_attn.Wqkv.weight": 1, "transformers.1.cross_attn.to_out.bias": 2,
                                 "log_assignment.0.x": 3, "self_attn.10.a": 4, "posenc.Wr.weight": 5}


def test_the_features_backend_comes_from_the_store_meta():
    assert features_backend({"name": "aliked"}) == "aliked"
    assert features_backend({"name": "ensemble", "local": {"name": "xfeat"}}) == "xfeat"
    members = [{"name": "cnn", "backend": {"name": "embedding"}}, {"name": "d", "backend": {"name": "disk"}}]
    assert features_backend({"name": "ensemble", "local": None, "local_member": "d", "members": members}) == "disk"
    with pytest.raises(ValueError, match="run the extract step first"):
        features_backend(None)
    with pytest.raises(ValueError, match="no LightGlue for sift features.*verify.matcher=nn"):
        lightglue_kind("sift")


def test_lightglue_with_features_it_was_not_trained_for_is_refused_at_once():
    with pytest.raises(ValueError, match="no LightGlue for sift features"):
        get_config("classical-best", {"verify": {"matcher": "lightglue"}})
    with pytest.raises(ValueError, match="verify.matcher: expected nn or lightglue"):
        get_config("default", {"verify": {"matcher": "superglue"}})
    with pytest.raises(ValueError, match="aliked_model"):
        get_config("default", {"extract": {"backend": "aliked", "learned": {"aliked_model": "aliked-x"}}})
    assert get_config("default", {"extract": {"backend": "disk"}, "verify": {"matcher": "lightglue"}})


def test_verify_pair_needs_the_matcher_it_is_told_to_use():
    from landmark_retrieval.features import Features
    from landmark_retrieval.matching.pairs import verify_pair

    conf = get_config("default", {"extract": {"backend": "xfeat"}, "verify": {"matcher": "lightglue"}}).verify
    f = Features.empty(64, (10, 10))
    with pytest.raises(ValueError, match="pass matcher=LightGlueMatcher"):
        verify_pair(f, f, conf)
