"""export_test_model(backbone="resnet50"): the realistic-cost DELG network of the benchmarks
exports the official interface (checked on a tiny input; the network itself is only timed in
benchmarks/)."""
import numpy as np
import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("tensorflow")
pytest.importorskip("keras")


def test_resnet50_export_has_the_official_interface_and_downloads_nothing(tmp_path, monkeypatch):
    import keras

    from landmark_retrieval.backends.delg import load_delg
    from landmark_retrieval.testing import export_test_model

    def no_download(*args, **kwargs):
        raise AssertionError("ResNet50(weights=None) must not download anything")

    monkeypatch.setattr(keras.utils, "get_file", no_download)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    model = load_delg(export_test_model(tmp_path / "m", style="tf1", backbone="resnet50"))
    assert model.style == "tf1" and model.has_local and model.has_global
    assert not model.has_global_scales_ind
    assert (model.local_dim, model.global_dim) == (128, 2048)
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    out = model(image, [1.0], abs_thres=0.0, max_feature_num=1000)
    assert out["global_descriptors"].shape == (1, 2048)
    assert np.all(np.isfinite(out["global_descriptors"]))
    # threshold 0 keeps every location of the stride-32 map: 2 x 3 receptive boxes of 291 px
    boxes = out["boxes"]
    assert out["features"].shape == (6, 128) and boxes.shape == (6, 4)
    centres = sorted(map(tuple, ((boxes[:, :2] + boxes[:, 2:]) / 2).round(3)))
    assert centres == [(y, x) for y in (0.0, 32.0) for x in (0.0, 32.0, 64.0)]
    assert np.allclose(boxes[:, 2] - boxes[:, 0], 290.0)
    assert not (tmp_path / "keras-home" / "models").exists()
