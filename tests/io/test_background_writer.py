"""store.BackgroundWriter: the extract step's HDF5 writes in a background thread."""
import errno

import numpy as np
import pytest

from landmark_retrieval.features import Features
from landmark_retrieval.io.atomic import StoreWriteError
from landmark_retrieval.io.store import FeatureStore, validate_shard
from landmark_retrieval.io.writer import BackgroundWriter, ShardWriter


def feats(n: int, value: float = 0.5, with_global: bool = True) -> Features:
    return Features(np.full((n, 2), value, np.float32), np.full((n, 4), value, np.float32),
                    np.arange(n, dtype=np.float32), np.ones(n, np.float32), (10, 20),
                    np.full(3, value, np.float32) if with_global else None)


def test_same_store_as_the_writer_itself(tmp_path):
    with BackgroundWriter(ShardWriter(tmp_path / "bg", shard_size=2), max_pending=1) as w:
        for i in range(5):
            w.add(f"id{i}", feats(i, value=i))
        w.add_failure("bad", "unreadable")
        w.add_note("id1", "truncated")
    with ShardWriter(tmp_path / "sync", shard_size=2) as w:
        for i in range(5):
            w.add(f"id{i}", feats(i, value=i))
        w.add_failure("bad", "unreadable")
        w.add_note("id1", "truncated")
    bg, sync = FeatureStore(tmp_path / "bg"), FeatureStore(tmp_path / "sync")
    shards = sorted(p.name for p in (tmp_path / "bg").glob("*.h5"))
    assert shards == sorted(p.name for p in (tmp_path / "sync").glob("*.h5")) and len(shards) == 4
    assert sorted(bg.local_ids) == sorted(sync.local_ids) == [f"id{i}" for i in range(5)]
    assert bg.failures == {"bad": "unreadable"} and bg.notes == {"id1": "truncated"}
    for i in range(5):
        a, b = bg.local(f"id{i}"), sync.local(f"id{i}")
        assert np.array_equal(a.keypoints, b.keypoints) and np.array_equal(a.scores, np.arange(i))
        assert a.image_size == (10, 20)
    ids, mat = bg.globals([f"id{i}" for i in range(5)])
    assert ids == [f"id{i}" for i in range(5)] and np.array_equal(mat[:, 0], np.arange(5, dtype=np.float32))


def test_write_error_is_raised_and_nothing_follows_it(tmp_path, monkeypatch):
    real = ShardWriter.add
    calls = {"n": 0}

    def failing(self, image_id, f, write_local=True):
        calls["n"] += 1
        if calls["n"] == 4:  # the 4th image: the second shard is being written
            raise self_error(self)
        return real(self, image_id, f, write_local)

    def self_error(writer):
        writer._discard()  # what ShardWriter does on a write error
        return StoreWriteError(errno.ENOSPC, "Could not write: no space left on device")

    monkeypatch.setattr(ShardWriter, "add", failing)
    with pytest.raises(StoreWriteError, match="no space left"):
        with BackgroundWriter(ShardWriter(tmp_path, shard_size=2)) as w:
            for i in range(8):
                w.add(f"id{i}", feats(1))
    store = FeatureStore(tmp_path)
    assert sorted(store.local_ids) == ["id0", "id1"]  # the finished shard only
    assert validate_shard(tmp_path / "part-00000.h5") is None
    assert not list(tmp_path.glob("*.tmp"))


def test_interruption_keeps_what_was_queued(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with BackgroundWriter(ShardWriter(tmp_path, shard_size=10)) as w:
            w.add("a", feats(2))
            w.add("b", feats(3, with_global=False))
            raise KeyboardInterrupt
    store = FeatureStore(tmp_path)
    assert sorted(store.local_ids) == ["a", "b"] and store.globals(["a", "b"])[0] == ["a"]
