import csv
import shutil

import numpy as np
import pytest

from landmark_retrieval.backends.base import Backend
from landmark_retrieval.extract import extract
from landmark_retrieval.features import Features
from landmark_retrieval.io.dataset import load_dataset
from landmark_retrieval.io.layout import feature_dir
from landmark_retrieval.io.store import FeatureStore, read_meta
from landmark_retrieval.presets import get_config


class CountingBackend(Backend):
    """Deterministic fake backend that counts its calls."""

    name = "counting"
    local_dim = 8

    def __init__(self):
        self.calls = 0

    def extract(self, image, local=True, global_=True):
        self.calls += 1
        h, w = image.shape[:2]
        g = np.ones(4, np.float32) / 2
        if self.calls == 3:
            raise RuntimeError("model failure on this image")
        return Features(np.array([[1.0, 2.0]], np.float32), np.eye(1, 8, dtype=np.float32),
                        np.ones(1, np.float32), np.ones(1, np.float32), (w, h), g)


@pytest.fixture
def dataset_copy(small_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(small_dataset, root)
    return root


def test_resume_recomputes_nothing_and_bad_images_are_reported(dataset_copy, tmp_path):
    ds = load_dataset(dataset_copy)
    bad = ds.path("test", ds.test_ids[0])
    bad.write_bytes(b"not a jpeg")
    missing = ds.path("train", ds.train_ids[-1])
    missing.unlink()
    conf = get_config("default", ["extract.shard_size=4"])
    backend = CountingBackend()
    work = tmp_path / "work"
    extract(conf, dataset_copy, work, backend=backend)
    n = len(ds.train_ids) + len(ds.test_ids)
    assert backend.calls == n - 2  # the unreadable and the missing file never reach the model
    rows = list(csv.DictReader(open(work / "failures.csv")))
    assert {r["id"] for r in rows} == {ds.test_ids[0], ds.train_ids[2]}
    # a train.csv id without a file (Kaggle's re-run ships a subset) is listed, not a failure
    assert list(csv.DictReader(open(work / "missing.csv"))) == [{"split": "train", "id": ds.train_ids[-1]}]
    assert any("model failure" in r["error"] for r in rows)
    assert all(r["path"] for r in rows)
    with FeatureStore(feature_dir(work, "train")) as s:
        assert len(s.local_ids) == len(ds.train_ids) - 2
    # a second run does nothing
    again = CountingBackend()
    extract(conf, dataset_copy, work, backend=again)
    assert again.calls == 0


def test_changed_settings_are_detected(small_dataset, tmp_path):
    work = tmp_path / "work"
    extract(get_config("demo"), small_dataset, work, splits=("train",))
    with pytest.raises(RuntimeError, match="other settings"):
        extract(get_config("demo", ["extract.sift.max_keypoints=50"]), small_dataset, work, splits=("train",))
    extract(get_config("demo", ["extract.sift.max_keypoints=50"]), small_dataset, work, splits=("train",),
            overwrite=True)
    store = FeatureStore(work / "features" / "train")  # re-extracted with the new settings
    assert store.local_ids and max(len(store.local(i)) for i in store.local_ids) == 50
    assert read_meta(work / "features" / "train")["sift"]["max_keypoints"] == 50


def test_codebook_fit_reads_a_bounded_sample(small_dataset, tmp_path, monkeypatch):
    from landmark_retrieval.backends.aggregators import VladAggregator

    seen = []
    fit = VladAggregator.fit
    monkeypatch.setattr(VladAggregator, "fit", lambda self, d: seen.append(len(d)) or fit(self, d))
    extract(get_config("demo", ["extract.vlad.max_training_descriptors=500"]), small_dataset, tmp_path / "w",
            splits=("train",))
    n_train = len(load_dataset(small_dataset).train_ids)
    assert seen and seen[0] <= n_train * (-(-1000 // n_train))  # 2 x cap spread over the images
