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


def _planar_pair(descriptors_agree: bool):
    """Two images whose first 120 of 200 points correspond under a homography; their descriptors
    are equal (nearest neighbours find the correspondences) or unrelated (they find none)."""
    import numpy as np

    from landmark_retrieval.features import Features, l2_normalize
    from landmark_retrieval.testing.two_view import IMAGE_SIZE, planar_matches

    p0, p1, _ = planar_matches(seed=3, inliers=120, outliers=80)
    rng = np.random.default_rng(0)
    d0 = l2_normalize(rng.normal(size=(len(p0), 32)).astype(np.float32))
    d1 = d0.copy() if descriptors_agree else l2_normalize(rng.normal(size=d0.shape).astype(np.float32))
    n = len(p0)
    make = lambda p, d: Features(p.astype(np.float32), d, np.ones(n, np.float32), np.ones(n, np.float32),  # noqa: E731
                                 IMAGE_SIZE)
    return make(p0, d0), make(p1, d1)


class _TrueMatcher:
    """Stands in for LightGlue: returns the 120 true correspondences and counts its calls."""

    calls = 0

    def __call__(self, *args):
        import numpy as np

        self.calls += 1
        return np.stack([np.arange(120), np.arange(120)], axis=1)


def test_the_nearest_neighbour_pass_spares_lightglue_only_the_pairs_it_confirms():
    from landmark_retrieval.matching.pairs import verify_pair

    base = {"extract": {"backend": "xfeat"}, "verify": {"matcher": "lightglue", "max_descriptor_distance": 1.5}}
    without = get_config("default", base).verify
    with_pass = get_config("default", {**base, "verify": {**base["verify"],
                                                          "lightglue": {"accept_nn_inliers": 50}}}).verify
    easy = _planar_pair(descriptors_agree=True)
    lg = _TrueMatcher()
    confirmed = verify_pair(*easy, with_pass, lg)
    assert lg.calls == 0 and confirmed.num_inliers >= 115  # NN found the 120: LightGlue never ran
    assert verify_pair(*easy, without, lg).num_inliers >= 115 and lg.calls == 1  # no pass: LightGlue runs

    hard = _planar_pair(descriptors_agree=False)  # NN finds nothing: LightGlue decides
    res = verify_pair(*hard, with_pass, lg)
    assert lg.calls == 2 and res.num_inliers >= 115
    assert (res.matches == lg(None)).all()
    with pytest.raises(ValueError, match="lightglue.accept_nn_inliers: expected a positive integer"):
        get_config("default", {**base, "verify": {"lightglue": {"accept_nn_inliers": 0}}})
