"""Ensemble backend: several models' global descriptors concatenated, local features from one.

GLR2020/2021 winners concatenated the global descriptors of several models and used DELG (or
other) local features for re-ranking only. Here the global descriptor of an image is

    g = normalize(concat(w_1 * g_1, ..., w_n * g_n))

where ``g_i`` is member ``i``'s L2-normalised global descriptor and ``w_i`` its weight (so a
member's share of the cosine similarity is ``w_i**2 / sum(w**2)``). Members are any registered
backends with a global descriptor of their own (``embedding``, ``delg``), each with its own
settings (:func:`landmark_retrieval.backends.ensemble.ensemble_members`). Backends that build the global
descriptor from local features with a codebook fitted on train images (VLAD of ``sift``) cannot be
members: they are refused with the fix (use them as the local backend).

Local features come from ``extract.ensemble.local``: a member (one call gives both, e.g. DELG),
another backend configured by ``extract``'s own settings (``sift``: RootSIFT), or none.
The image is decoded once and handed to every member and the local backend.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ..config import EnsembleConfig, ExtractConfig, extract_sections
from ..features import Features, l2_normalize
from ..overrides import RECORDS_EXAMPLE, apply_settings, coerce_scalar
from .base import Backend, as_rgb_uint8
from .embedding_input import validate_embedding
from .registry import BACKENDS, make_backend

logger = logging.getLogger("landmark_retrieval")


def concat_globals(descriptors: List[np.ndarray], weights: List[float]) -> np.ndarray:
    """``normalize(concat(w_i * normalize(g_i)))``.

    Args:
        descriptors: one (G_i,) vector per member.
        weights: one positive weight per member.

    Returns:
        (sum G_i,) float32 with unit norm (zeros only if every member's vector is zero).
    """
    if len(descriptors) != len(weights) or not descriptors:
        raise ValueError(f"expected one weight per descriptor, got {len(descriptors)} descriptors and "
                         f"{len(weights)} weights")
    parts = [np.float32(w) * l2_normalize(np.asarray(g, np.float32).reshape(1, -1))[0]
             for g, w in zip(descriptors, weights)]
    return l2_normalize(np.concatenate(parts)[None])[0]


class EnsembleBackend(Backend):
    """Weighted concatenation of members' global descriptors + local features of one backend.

    Args:
        conf: extract settings with ``backend="ensemble"`` (``extract.ensemble`` names the members
            and the local source; members inherit the other ``extract`` settings).
        members: already-built ``(name, weight, backend)`` members instead of ``conf``'s (tests,
            notebooks reusing loaded models).
        local: with ``members``: the local backend (a member's object or another one), or None.

    Raises:
        ValueError / KeyError: a bad member (named: ``extract.ensemble.members[1]...``), a member
            without its own global descriptor, or a local backend without local features.
    """

    name = "ensemble"
    aggregator = None

    def __init__(self, conf: Optional[ExtractConfig] = None,
                 members: Optional[List[Tuple[str, float, Backend]]] = None, local: Optional[Backend] = None):
        self.conf = conf
        if members is None:
            if conf is None:
                raise ValueError("EnsembleBackend needs extract settings (conf) or built members")
            specs = ensemble_members(conf)
            local_index, local_conf = ensemble_local(conf, specs)
            members = []
            for i, spec in enumerate(specs):
                logger.info("Ensemble member %s (%s, weight %g)", spec.name, spec.extract.backend, spec.weight)
                try:
                    member = make_backend(spec.extract)
                except ValueError as exc:  # the member's settings are extract.ensemble.members[i].*
                    raise ValueError(f"extract.ensemble.members[{i}] ({spec.name}): {exc}") from exc
                members.append((spec.name, spec.weight, member))
                self._check_member(i, *members[-1])  # before the next model is loaded
            local = members[local_index][2] if local_index is not None else (
                make_backend(local_conf) if local_conf is not None else None)
            local_where = f"extract.ensemble.local={conf.ensemble.local}"
        else:
            local_where = "local"
        if not members:
            raise ValueError("extract.ensemble.members: the ensemble backend needs at least one member")
        for i, member in enumerate(members):
            self._check_member(i, *member)
        if local is not None and not local.local_dim:
            raise ValueError(f"{local_where}: the {local.name} backend gives no local features; choose delg or sift "
                             "(or none to go without re-ranking)")
        self.members = list(members)
        self.local_backend = local
        self._local_is_member = any(local is b for _, _, b in self.members)
        logger.info("Ensemble of %d member(s) (%s), local features from %s", len(self.members),
                    ", ".join(f"{n} x{w:g}" for n, w, _ in self.members),
                    "nothing (no re-ranking)" if local is None else
                    f"member {self._local_name()}" if self._local_is_member else f"the {local.name} backend")

    @staticmethod
    def _check_member(i: int, name: str, weight: float, backend: Backend) -> None:
        """Refuse a member that cannot give its own global descriptor per image."""
        where = f"extract.ensemble.members[{i}] ({name})"
        if backend.aggregator is not None:
            raise ValueError(
                f"{where}: the {backend.name} backend builds its global descriptor from local features with a "
                f"codebook fitted on train images ({type(backend.aggregator).__name__}), which an ensemble cannot "
                f"do per image. Use it for local features instead (extract.ensemble.local={backend.name}) and "
                "give the ensemble members with a global descriptor of their own (embedding, delg)")
        if getattr(backend, "want_global", True) is False:
            raise ValueError(f"{where}: the member gives no global descriptor (extract.delg.global_ is false or "
                             "the model has no global head)")
        if not (np.isfinite(weight) and weight > 0):
            raise ValueError(f"{where}: the weight must be a positive number, got {weight}")

    def _local_name(self) -> Optional[str]:
        for name, _, backend in self.members:
            if backend is self.local_backend:
                return name
        return None

    @property
    def local_dim(self) -> int:  # type: ignore[override]
        """Size of the local descriptors (those of the local backend; 0 without one)."""
        return int(self.local_backend.local_dim) if self.local_backend is not None else 0

    def describe(self) -> dict:
        """Every member's ``describe()`` with its name and weight, and the local backend's
        (``local_member``: the member that gives them, if one does)."""
        return {
            "name": self.name,
            "members": [{"name": name, "weight": float(weight), "backend": backend.describe()}
                        for name, weight, backend in self.members],
            "local": self.local_backend.describe() if self.local_backend is not None else None,
            "local_member": self._local_name(),
        }

    def extract(self, image: np.ndarray, local: bool = True, global_: bool = True) -> Features:
        """Features of an RGB uint8 image (H, W, 3): the local backend's local features (as it
        gives them: original-image pixels) and the concatenated global descriptor.

        ``global_=False`` skips the members (except a member that gives the local features, called
        for those only); ``local=False`` skips the local backend.

        Raises:
            ValueError: a member failed or gave no usable global descriptor (named).
        """
        image = as_rgb_uint8(image)
        height, width = image.shape[:2]
        want_local = bool(local) and self.local_backend is not None
        local_feats: Optional[Features] = None
        globals_: List[np.ndarray] = []
        for name, _, backend in self.members:
            gives_local = want_local and backend is self.local_backend
            if not (global_ or gives_local):
                continue
            try:
                feats = backend.extract(image, local=gives_local, global_=global_)
            except ValueError as exc:
                raise ValueError(f"ensemble member {name}: {exc}") from exc
            if gives_local:
                local_feats = feats
            if global_:
                g = feats.global_descriptor
                if g is None or not np.all(np.isfinite(g)) or not np.any(g):
                    raise ValueError(f"ensemble member {name} gave no usable global descriptor")
                globals_.append(g)
        if want_local and local_feats is None:
            local_feats = self.local_backend.extract(image, local=True, global_=False)
        descriptor = concat_globals(globals_, [w for _, w, _ in self.members]) if global_ else None
        if local_feats is None:
            return Features.empty(self.local_dim, (width, height), descriptor)
        local_feats.global_descriptor = descriptor
        return local_feats



@dataclass
class EnsembleMember:
    """One member of an ensemble (see :func:`ensemble_members`)."""

    name: str  # its label: the record's "name", else the backend (numbered when several unnamed share it)
    weight: float  # its global descriptor is multiplied by this before concatenation
    extract: "ExtractConfig"  # its complete settings (backend, model_path, sections)


#: what a member record may set besides "backend", "weight", "name" and the backend sections; the
#: other extract settings (max_pixels, shard_size, train_local, ...) belong to the whole step
MEMBER_OPTIONS = ("model_path", "max_image_size")


def ensemble_members(extract: ExtractConfig) -> List[EnsembleMember]:
    """The members of ``extract.ensemble``, validated, each with its complete extract settings.

    A member's settings are ``extract``'s (its sections, ``model_path``, ``max_image_size``) with
    the member record's own applied over them, so ``--set extract.embedding.input_size=512``
    reaches every embedding member that does not set its own.

    Raises:
        ValueError / KeyError: naming the member (``extract.ensemble.members[1].weight: ...``).
    """
    where0 = "extract.ensemble.members"
    records = extract.ensemble.members
    if not records:
        raise ValueError(f"{where0}: the ensemble backend needs at least one member, e.g. "
                         f"--set 'extract.ensemble.members={RECORDS_EXAMPLE}'")
    sections = tuple(s for s in extract_sections() if s != "ensemble")
    allowed = ("backend", "weight", "name") + MEMBER_OPTIONS + sections
    choices = ", ".join(b for b in BACKENDS if b != "ensemble")
    base = copy.deepcopy(extract)
    base.ensemble = EnsembleConfig()
    unnamed = [r.get("backend") if "name" not in r else None for r in records]
    members: List[EnsembleMember] = []
    for i, record in enumerate(records):
        where = f"{where0}[{i}]"
        unknown = [k for k in record if k not in allowed]
        if unknown:
            raise KeyError(f"Unknown option {where}.{unknown[0]}; a member takes: {', '.join(allowed)} (the other "
                           "extract settings apply to the whole step: set them as extract.OPTION)")
        backend = record.get("backend")
        if not isinstance(backend, str) or backend not in BACKENDS or backend == "ensemble":
            why = ("an ensemble cannot be a member of an ensemble (list its members here instead)"
                   if backend == "ensemble" else f"unknown backend {backend!r}" if backend else "missing")
            raise ValueError(f"{where}.backend: {why}; choose one of: {choices}")
        weight = coerce_scalar(record.get("weight", 1.0), float, f"{where}.weight")
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"{where}.weight: expected a positive number, got {weight}")
        conf = copy.deepcopy(base)
        apply_settings(conf, {k: v for k, v in record.items() if k not in ("weight", "name")}, where0, where)
        validate_embedding(conf.embedding, f"{where}.embedding")
        if "name" in record:
            name = coerce_scalar(record["name"], str, f"{where}.name")
        elif unnamed.count(backend) > 1:
            name = f"{backend}{unnamed[:i + 1].count(backend)}"
        else:
            name = backend
        if not name or name in [m.name for m in members]:
            raise ValueError(f"{where}.name: {name!r} is {'empty' if not name else 'the name of another member'}; "
                             "give every member its own name")
        members.append(EnsembleMember(name, weight, conf))
    return members


def ensemble_local(extract: ExtractConfig,
                   members: List[EnsembleMember]) -> Tuple[Optional[int], Optional[ExtractConfig]]:
    """Where an ensemble's local features come from (``extract.ensemble.local``).

    Returns:
        ``(member index, None)`` when ``local`` names a member (its name, or the backend of
        exactly one member), ``(None, settings)`` for a separate backend configured by ``extract``'s
        own settings (e.g. ``sift`` with ``extract.sift``), ``(None, None)`` for no local features.

    Raises:
        ValueError: an unknown name, or a backend shared by several members (name one).
    """
    local = extract.ensemble.local
    if local is None:
        return None, None
    names = [m.name for m in members]
    if local in names:
        return names.index(local), None
    same = [m.name for m in members if m.extract.backend == local]
    if len(same) > 1:
        raise ValueError(f"extract.ensemble.local: {len(same)} members use the {local} backend ({', '.join(same)}): "
                         "set local to the name of one of them")
    if same:
        return names.index(same[0]), None
    if not isinstance(local, str) or local not in BACKENDS or local == "ensemble":
        raise ValueError(f"extract.ensemble.local: {local!r} is neither a member ({', '.join(names)}) nor a backend "
                         f"({', '.join(b for b in BACKENDS if b != 'ensemble')}); none = no local features")
    conf = copy.deepcopy(extract)
    conf.backend = local
    conf.ensemble = EnsembleConfig()
    return None, conf


def backends_used(extract: ExtractConfig) -> List[str]:
    """The backend and, for an ensemble, its members' and local backend's names (unvalidated)."""
    names = [extract.backend]
    if extract.backend == "ensemble":
        names += [r.get("backend") for r in extract.ensemble.members if isinstance(r.get("backend"), str)]
        if extract.ensemble.local:
            names.append(extract.ensemble.local)
    return names
