"""A missing optional package stops a command in one line naming the extra, before any work."""
from __future__ import annotations

import importlib.util

import pytest

from landmark_retrieval.cli import main
from landmark_retrieval.dependencies import check_dependencies, needed_packages
from landmark_retrieval.presets import get_config


@pytest.fixture
def without(monkeypatch):
    """Make find_spec report the given top-level packages as missing."""
    missing = set()
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name.split(".")[0] in missing else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return missing


@pytest.mark.parametrize("overrides, package, words", [
    ({"retrieve": {"index": "hnsw"}}, "faiss", "retrieve.index=hnsw needs faiss"),
    ({"retrieve": {"projection": {"method": "siamese"}}}, "tensorflow", "needs TensorFlow"),
    ({"extract": {"backend": "xfeat"}}, "torch", "extract.backend=xfeat needs PyTorch"),
    ({"extract": {"backend": "embedding", "model_path": "efficientnet-lite0"}}, "torch", "needs PyTorch"),
    ({"extract": {"backend": "embedding", "model_path": "m.onnx"}}, "onnxruntime", "needs ONNX Runtime"),
    ({"extract": {"backend": "delg"}}, "tensorflow", "extract.backend=delg needs TensorFlow"),
    ({"run": {"cluster": "local:2"}}, "distributed", "run.cluster needs Dask"),
])
def test_each_optional_package_is_named_with_its_extra(without, overrides, package, words):
    conf = get_config("default", overrides)
    assert package in needed_packages(conf)
    check_dependencies(conf)  # installed here: nothing to say
    without.add(package)
    with pytest.raises(RuntimeError, match=words + r".*pip install|" + words + r".*make install"):
        check_dependencies(conf)


def test_the_classical_run_needs_no_optional_package():
    assert needed_packages(get_config("classical-best")) == {}
    assert needed_packages(get_config("classical-best", {"retrieve": {"index": "asmk"}})) == {}


def test_commands_stop_before_any_work(without, small_dataset, tmp_path, caplog):
    without.update({"faiss", "tensorflow"})
    work = tmp_path / "w"
    assert main(["run", "--data", str(small_dataset), "--work", str(work), "--preset", "demo",
                 "--set", "retrieve.index=hnsw"]) == 2
    assert "retrieve.index=hnsw needs faiss" in caplog.text and not work.exists()
    assert main(["make-test-model", str(tmp_path / "m")]) == 2
    assert "make-test-model needs TensorFlow" in caplog.text and not (tmp_path / "m").exists()
