import h5py
import numpy as np
import pytest

from landmark_retrieval.features import Features
from landmark_retrieval.io.store import FeatureStore
from landmark_retrieval.io.writer import ShardWriter


def make(rng, n, with_global=True):
    return Features(
        keypoints=rng.uniform(0, 100, (n, 2)).astype(np.float32),
        descriptors=rng.normal(size=(n, 128)).astype(np.float32),
        scores=rng.uniform(size=n).astype(np.float32),
        scales=rng.uniform(size=n).astype(np.float32),
        image_size=(640, 480),
        global_descriptor=rng.normal(size=16).astype(np.float32) if with_global else None,
    )


def test_round_trip_across_shards(tmp_path, rng):
    feats = {f"id{i:03d}": make(rng, n) for i, n in enumerate([5, 0, 12, 1, 7])}
    with ShardWriter(tmp_path, shard_size=2) as w:
        for k, f in feats.items():
            w.add(k, f)
        w.add_failure("bad", "IOError: truncated")
    assert len(list(tmp_path.glob("part-*.h5"))) == 3
    with FeatureStore(tmp_path) as s:
        assert sorted(s.local_ids) == sorted(feats)
        assert s.failures == {"bad": "IOError: truncated"}
        assert s.done_ids() == set(feats) | {"bad"}
        for k, f in feats.items():
            g = s.local(k)
            for name in ("keypoints", "descriptors", "scores", "scales"):
                assert np.array_equal(getattr(g, name), getattr(f, name)) and getattr(g, name).dtype == np.float32
            assert g.image_size == (640, 480)
        assert s.local("id001").descriptors.shape == (0, 128)
        ids, mat = s.globals(["id004", "id000", "missing"])
        assert ids == ["id004", "id000"] and mat.dtype == np.float32
        assert np.array_equal(mat, np.stack([feats["id004"].global_descriptor, feats["id000"].global_descriptor]))
        with pytest.raises(KeyError, match="extract"):
            s.local("missing")


def test_half_precision_and_interrupted_shard(tmp_path, rng):
    f = make(rng, 4)
    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(tmp_path, shard_size=100, half_precision=True) as w:
            w.add("a", f)
            raise KeyboardInterrupt
    # the interrupted shard is completed on exit: nothing added is lost
    with FeatureStore(tmp_path) as s:
        assert s.local_ids == ["a"]
        assert np.allclose(s.local("a").descriptors, f.descriptors, atol=1e-2)
    with h5py.File(next(tmp_path.glob("part-*.h5"))) as h:
        assert h["local/a/descriptors"].dtype == np.float16


def test_stale_temporary_shards_are_ignored_and_removed(tmp_path, rng):
    (tmp_path / "part-00000.h5.tmp").write_bytes(b"garbage of a killed run")
    assert FeatureStore(tmp_path).local_ids == []
    with ShardWriter(tmp_path) as w:
        w.add("x", make(rng, 2))
    assert not list(tmp_path.glob("*.tmp"))
    assert FeatureStore(tmp_path).local_ids == ["x"]


def test_invalid_ids_rejected(tmp_path, rng):
    with ShardWriter(tmp_path) as w, pytest.raises(ValueError, match="cannot contain"):
        w.add("a/b", make(rng, 1))
