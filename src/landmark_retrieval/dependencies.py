"""The optional packages a configuration needs, checked before any work starts.

A run whose settings need TensorFlow (DELG, Keras/SavedModel embedding models, learned
projections), faiss (``retrieve.index=ivfpq|hnsw``), PyTorch + kornia (learned local features,
LightGlue, PyTorch embedding models) or Dask (``run.cluster``) stops in one line naming the
extra to install, instead of failing after extraction. Packages are looked up with
:func:`importlib.util.find_spec` (nothing is imported).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, List, Optional

from .backends.embedding import KERAS_SUFFIXES, ONNX_SUFFIXES
from .backends.embedding_torch import NAMED_MODELS, TORCH_SUFFIXES
from .backends.registry import BACKENDS
from .backends.torch_runtime import MissingDependencyError
from .config import Config, ExtractConfig
from .presets import local_backend

#: package to look up -> (what it is called, how to install it)
EXTRAS: Dict[str, tuple] = {
    "tensorflow": ("TensorFlow", "pip install 'landmark-retrieval[delg]' (on Kaggle it is preinstalled)"),
    "faiss": ("faiss", "pip install 'landmark-retrieval[faiss]' (or use retrieve.index=exact)"),
    "torch": ("PyTorch", "make install-learned, or pip install torch 'landmark-retrieval[learned]' (on Kaggle "
                         "torch is preinstalled)"),
    "kornia": ("kornia", "pip install 'landmark-retrieval[learned]'"),
    "onnxruntime": ("ONNX Runtime", "pip install 'landmark-retrieval[onnx]'"),
    "distributed": ("Dask distributed", "pip install 'landmark-retrieval[distributed]'"),
}
#: the backends that read extract.learned: PyTorch + kornia models (xfeat, disk, aliked)
LEARNED_BACKENDS = tuple(name for name, info in BACKENDS.items() if "learned" in info.sections)


def _embedding_needs(path: Optional[str], fmt: str) -> List[str]:
    """Packages an embedding model needs, from its format or its path."""
    if fmt in ("keras", "savedmodel"):
        return ["tensorflow"]
    if fmt in ("torchscript", "torch", "named"):
        return ["torch"]
    if fmt == "onnx":
        return ["onnxruntime"]
    if not path:
        return []
    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir() or suffix in KERAS_SUFFIXES:
        return ["tensorflow"]
    if suffix in ONNX_SUFFIXES:
        return ["onnxruntime"]
    if suffix in TORCH_SUFFIXES or (str(path) in NAMED_MODELS and not p.exists()):
        return ["torch"]
    return []


def _backend_needs(extract: ExtractConfig) -> Dict[str, str]:
    """package -> the setting that needs it, for the extraction settings (ensemble members included)."""
    out: Dict[str, str] = {}
    backend = extract.backend
    if backend == "delg":
        out["tensorflow"] = "extract.backend=delg"
    if backend in LEARNED_BACKENDS:
        out.update({"torch": f"extract.backend={backend}", "kornia": f"extract.backend={backend}"})
    if backend == "embedding":
        for package in _embedding_needs(extract.embedding.model_path or extract.model_path, extract.embedding.format):
            out[package] = "the embedding model"
    if backend == "ensemble":
        for i, member in enumerate(extract.ensemble.members):
            name = member.get("backend")
            section = member.get("embedding", {}) or {}
            if name == "delg":
                out["tensorflow"] = f"extract.ensemble.members[{i}]"
            elif name == "embedding":
                path = section.get("model_path") or member.get("model_path") or extract.embedding.model_path
                for package in _embedding_needs(path, section.get("format", extract.embedding.format)):
                    out[package] = f"extract.ensemble.members[{i}]"
        local = local_backend(extract)
        if local in LEARNED_BACKENDS:
            out.update({"torch": f"extract.ensemble.local={local}", "kornia": f"extract.ensemble.local={local}"})
        elif local == "delg":
            out["tensorflow"] = "extract.ensemble.local=delg"
    return out


def needed_packages(conf: Config) -> Dict[str, str]:
    """package -> the setting that needs it, for every optional package ``conf`` needs."""
    out = _backend_needs(conf.extract)
    if conf.retrieve.index in ("ivfpq", "hnsw"):
        out["faiss"] = f"retrieve.index={conf.retrieve.index}"
    if conf.retrieve.projection.method:
        out["tensorflow"] = f"retrieve.projection.method={conf.retrieve.projection.method}"
    if conf.verify.enabled and conf.verify.matcher == "lightglue":
        out.update({"torch": "verify.matcher=lightglue", "kornia": "verify.matcher=lightglue"})
    if conf.run.cluster:
        out["distributed"] = "run.cluster"
    return out


def require(package: str, what: str) -> None:
    """Raise :class:`MissingDependencyError` naming ``what`` when ``package`` is not installed."""
    if importlib.util.find_spec(package) is None:
        name, install = EXTRAS[package]
        raise MissingDependencyError(f"{what} needs {name}, which is not installed: {install}")


def check_dependencies(conf: Config) -> None:
    """Raise before any work when an optional package ``conf`` needs is not installed.

    Raises:
        MissingDependencyError: one line naming the setting, the package and how to install it.
    """
    for package, setting in needed_packages(conf).items():
        require(package, setting)
