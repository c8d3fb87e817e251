"""Pipeline configuration: one dataclass per step, named presets, overrides, a run's saved copy.

A configuration is a :class:`Config` holding one section per pipeline step; ``extract`` has one
sub-section per group of backend settings (``extract.sift``, ``extract.vlad``, ``extract.delg``;
which backend reads which is registered in :data:`landmark_retrieval.backends.BACKENDS`).
Presets are named partial configurations (:data:`PRESETS`); :func:`get_config` starts from the
defaults, applies a preset, then applies overrides given either as a nested dict (notebooks) or
as ``"section.option=value"`` strings (CLI ``--set``)::

    conf = get_config("kaggle-baseline", {"verify": {"num_to_rerank": 20}})
    conf = get_config("kaggle-baseline", ["verify.num_to_rerank=20", "extract.delg.score_threshold=150"])

A run keeps its configuration in ``WORK/config.json``: :func:`resolve_run_config` continues a run
with it (every CLI step does), :func:`save_run_config` saves it (``pipeline.run`` does), and
:func:`config_diff` names the settings that differ between two configurations.

Presets
-------
``kaggle-baseline``
    The GLR2020 host baseline, exactly: DELG scales (0.7071, 1.0, 1.4142), attention threshold
    175, 1000 local features; re-rank the 10 nearest train images with DEGENSAC (4 px, 0.99
    confidence, 1000 iterations) on nearest-neighbour matches closer than 0.9; total score
    ``min(inliers, 70) / 70 + cosine``; the label with the largest summed score over the top 5
    re-ranked neighbours wins, with that sum as confidence.
``glr-tuned``
    The host baseline with the DEGENSAC settings a GLR2020 silver-medal single-DELG solution
    reported as better: a 12 px reprojection threshold, 5000 iterations, descriptor distance 0.85,
    inlier cap 40 (the range they found good was 20-70).
``demo``
    The classical backend (RootSIFT + VLAD) with ratio-test matching, sized for the embedded demo.
``default``
    The classical backend with the host baseline's verification settings.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import numbers
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from .layout import config_path

logger = logging.getLogger("landmark_retrieval")

BASELINE_SCALES = (0.70710677, 1.0, 1.4142135)


@dataclass
class SiftConfig:
    """RootSIFT local features (backend ``sift``; OpenCV SIFT, strongest keypoints kept)."""

    max_keypoints: int = 1000  # local features per image
    contrast_threshold: float = 0.02  # OpenCV SIFT contrastThreshold (lower = more keypoints)


@dataclass
class VladConfig:
    """VLAD global descriptor over RootSIFT (backend ``sift``), codebook fitted on train images."""

    num_words: int = 64  # k-means codebook size (the descriptor has num_words * 128 dimensions)
    max_training_descriptors: int = 200_000  # train descriptors sampled to fit the codebook
    power: float = 0.5  # signed power-law normalisation exponent
    intra_normalization: bool = True  # L2-normalise each word's residual sum
    seed: int = 0  # seeds the descriptor sample and the k-means of the codebook


@dataclass
class DelgConfig:
    """DELG features from a SavedModel (backend ``delg``)."""

    scales: Tuple[float, ...] = BASELINE_SCALES  # image pyramid scales
    score_threshold: float = 175.0  # attention threshold of local features
    max_keypoints: int = 1000  # local features per image (the model's max_feature_num)
    global_scales_ind: Optional[Tuple[int, ...]] = None  # scales pooled into the global descriptor; None = all
    local: bool = True  # extract local features (needed to verify)
    global_: bool = True  # extract the global descriptor (needed to retrieve); "global" works too


@dataclass
class ExtractConfig:
    """Feature extraction (step 1): settings shared by every backend, then one section per group."""

    backend: str = "sift"  # a name in landmark_retrieval.backends.BACKENDS: "sift" or "delg"
    model_path: Optional[str] = None  # model directory of the backends that need one (delg: a SavedModel)
    max_image_size: Optional[int] = None  # resize so that max(H, W) <= this before extraction
    # Images with more pixels are decoded at reduced size (JPEG DCT scaling, then bilinear) to at
    # most this many pixels: bounds memory (RootSIFT needs ~230 MB per megapixel; 8 MP keeps a
    # classical run under ~2.5 GB). Keypoints stay in original pixels. None = no limit.
    max_pixels: Optional[int] = 8_000_000
    num_workers: int = 2  # image-decoding threads that run ahead of the extractor
    shard_size: int = 500  # images per HDF5 shard; an interruption loses at most one shard
    half_precision: bool = False  # store local descriptors as float16 (halves disk use)
    # "all": local features of every train image (one model call per image);
    # "candidates": train images get global descriptors first, then local features only for the
    # train images that some test image re-ranks (the disk-feasible choice at GLR scale: DELG
    # local features take ~0.5 MB per image). Backends whose global descriptor is built from
    # local ones (VLAD) always use "all".
    train_local: str = "all"
    sift: SiftConfig = field(default_factory=SiftConfig)
    vlad: VladConfig = field(default_factory=VladConfig)
    delg: DelgConfig = field(default_factory=DelgConfig)


@dataclass
class RetrieveConfig:
    """k-nearest-neighbour retrieval by cosine similarity of global descriptors (step 2)."""

    k: int = 100  # neighbours kept per test image (>= num_to_rerank; 100 for mAP@100)
    block_size: int = 4096  # test images per block of the similarity product
    use_faiss: bool = True  # faiss exact inner-product search when importable
    half_precision: bool = False  # hold train descriptors as float16 (halves memory at GLR scale)


@dataclass
class VerifyConfig:
    """Local matching and DEGENSAC geometric verification (step 3)."""

    enabled: bool = True
    num_to_rerank: int = 10
    max_descriptor_distance: float = 0.9  # L2 between unit descriptors
    ratio_test: Optional[float] = None  # Lowe ratio (e.g. 0.85); None = off
    mutual: bool = False  # keep mutual nearest neighbours only
    max_reprojection_error: float = 4.0  # pixels
    confidence: float = 0.99
    max_iterations: int = 1000
    min_matches: int = 5  # fewer putative matches than this give 0 inliers
    seed: int = 0
    num_workers: int = 0  # processes; 0 = one per CPU core


@dataclass
class PredictConfig:
    """Re-ranking and label aggregation (step 4)."""

    top_k: int = 5  # re-ranked neighbours that vote for a label
    max_inlier_score: int = 70  # inliers are capped at this and divided by it
    global_weight: float = 1.0  # total = local_score + global_weight * cosine


@dataclass
class Config:
    """The whole pipeline configuration."""

    name: str = "default"
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)

    def to_dict(self, relevant_only: bool = False) -> Dict[str, Any]:
        """Nested dict of every setting.

        Args:
            relevant_only: leave out the ``extract`` sections (and ``model_path``) that the
                configured backend does not read.
        """
        out = dataclasses.asdict(self)
        if relevant_only:
            from .backends import BACKENDS

            info = BACKENDS.get(self.extract.backend)
            used = set(info.sections) if info else set()
            for name in extract_sections():
                if name not in used:
                    del out["extract"][name]
            if info is not None and not info.needs_model:
                del out["extract"]["model_path"]
        return out

    def to_json(self, relevant_only: bool = False) -> str:
        """:meth:`to_dict` as indented JSON (what ``WORK/config.json`` holds)."""
        return json.dumps(self.to_dict(relevant_only), indent=2, sort_keys=True)

    def summary(self) -> str:
        """One line: the preset and the settings that differ from it, as ``--set`` arguments."""
        return config_summary(self)


@dataclass(frozen=True)
class Preset:
    """A named partial configuration."""

    description: str  # one line, shown by `landmark-retrieval presets`
    settings: Mapping[str, Any]  # nested dict applied over the defaults


PRESETS: Dict[str, Preset] = {
    "default": Preset("the classical backend (RootSIFT + VLAD) with the host baseline's verification settings", {}),
    "kaggle-baseline": Preset(
        "the GLR2020 host baseline exactly: DELG (3 scales, attention 175, 1000 features), DEGENSAC "
        "re-ranking of the 10 nearest, per-label sum over the top 5",
        {
            "extract": {
                "backend": "delg",
                "train_local": "candidates",
                "delg": {"scales": BASELINE_SCALES, "score_threshold": 175.0, "max_keypoints": 1000},
            },
            "verify": {
                "num_to_rerank": 10,
                "max_descriptor_distance": 0.9,
                "ratio_test": None,
                "mutual": False,
                "max_reprojection_error": 4.0,
                "confidence": 0.99,
                "max_iterations": 1000,
                "min_matches": 5,
            },
            "predict": {"top_k": 5, "max_inlier_score": 70, "global_weight": 1.0},
        },
    ),
    "glr-tuned": Preset(
        "kaggle-baseline with the DEGENSAC settings of a GLR2020 silver solution (12 px, 5000 "
        "iterations, distance 0.85, inlier cap 40)",
        {
            "extract": {"backend": "delg", "train_local": "candidates"},
            "verify": {
                "max_reprojection_error": 12.0,
                "max_iterations": 5000,
                "max_descriptor_distance": 0.85,
            },
            "predict": {"max_inlier_score": 40},
        },
    ),
    "demo": Preset(
        "the classical backend (RootSIFT + VLAD) with ratio-test matching, sized for the embedded demo",
        {
            "extract": {"backend": "sift", "sift": {"max_keypoints": 1000}, "vlad": {"num_words": 32}},
            "verify": {
                "num_to_rerank": 10,
                "ratio_test": 0.9,
                "max_descriptor_distance": 1.0,
                "max_reprojection_error": 6.0,
                "max_iterations": 2000,
            },
            "predict": {"top_k": 5, "max_inlier_score": 40},
        },
    ),
}

#: extract options of earlier versions (flat names) -> their place now, read from old config.json files
RENAMED: Dict[str, str] = {
    "extract.sift_max_keypoints": "extract.sift.max_keypoints",
    "extract.sift_contrast_threshold": "extract.sift.contrast_threshold",
    "extract.vlad_num_words": "extract.vlad.num_words",
    "extract.vlad_max_training_descriptors": "extract.vlad.max_training_descriptors",
    "extract.vlad_power": "extract.vlad.power",
    "extract.vlad_intra_normalization": "extract.vlad.intra_normalization",
    "extract.seed": "extract.vlad.seed",
    "extract.delg_scales": "extract.delg.scales",
    "extract.delg_score_threshold": "extract.delg.score_threshold",
    "extract.delg_max_feature_num": "extract.delg.max_keypoints",
    "extract.delg_global_scales_ind": "extract.delg.global_scales_ind",
    "extract.delg_local": "extract.delg.local",
    "extract.delg_global": "extract.delg.global_",
}

#: one change between two configurations: (dotted key, old value, new value)
Change = Tuple[str, Any, Any]


def list_presets() -> Tuple[str, ...]:
    """Names of the available presets."""
    return tuple(PRESETS)


def extract_sections() -> Tuple[str, ...]:
    """Names of the per-backend sections of :class:`ExtractConfig` (``sift``, ``vlad``, ``delg``)."""
    hints = _hints(ExtractConfig)
    return tuple(f.name for f in dataclasses.fields(ExtractConfig) if dataclasses.is_dataclass(hints[f.name]))


# --------------------------------------------------------------------------------------------
# Typed overrides
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _kind(tp: Any) -> Tuple[bool, Any, Any]:
    """``(optional, base type, element type)`` of a field type (element type for tuples)."""
    optional = False
    if typing.get_origin(tp) is Union:
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        tp = rest[0]
    if typing.get_origin(tp) is tuple:
        return optional, tuple, typing.get_args(tp)[0]
    return optional, tp, None


_EXPECTED = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_NOUNS = {int: "integer", float: "number"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _scalar(value: Any, base: type, where: str) -> Any:
    """``value`` (a CLI string or a notebook value) as ``base``, or a ValueError naming ``where``."""
    text = value.strip() if isinstance(value, str) else None
    if base is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
    elif base is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if text is not None:
            try:
                return int(text)
            except ValueError:
                pass
    elif base is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        if text is not None:
            try:
                return float(text)
            except ValueError:
                pass
    elif base is str:
        if isinstance(value, (str, os.PathLike)):
            return str(text if text is not None else Path(value))
    else:  # pragma: no cover - every field type is listed above
        return value
    raise ValueError(f"{where}: expected {_EXPECTED[base]}, got {value!r}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a CLI string or a notebook value to the type of a config field."""
    optional, base, elem = _kind(tp)
    text = value.strip().lower() if isinstance(value, str) else None
    if value is None or text in ("none", "null", ""):
        if optional:
            return None
        what = _EXPECTED.get(base, "a value") if base is not tuple else f"comma-separated {_NOUNS[elem]}s"
        raise ValueError(f"{where}: expected {what}, got {value!r} (this option cannot be none)")
    if base is tuple:
        what = f"comma-separated {_NOUNS[elem]}s, e.g. {'0.5,1.0' if elem is float else '0,2'}"
        if isinstance(value, str):
            items: Iterable[Any] = [v for v in value.replace(" ", "").strip("()[]").split(",") if v]
        elif isinstance(value, (list, tuple)):
            items = value
        else:
            raise ValueError(f"{where}: expected {what}, got {value!r}")
        try:
            return tuple(_scalar(v, elem, where) for v in items)
        except ValueError:
            raise ValueError(f"{where}: expected {what}, got {value!r}") from None
    return _scalar(value, base, where)


def _unknown(target: Any, where: str, source: str) -> KeyError:
    names = [f.name for f in dataclasses.fields(target)]
    section = where.rsplit(".", 1)[0] if "." in where else ""
    if not section:
        return KeyError(f"Unknown config section {where!r} in {source}; expected one of: {', '.join(names)}")
    hint = f" ({where} is now {RENAMED[where]})" if where in RENAMED else ""
    return KeyError(f"Unknown option {where} in {source}{hint}; valid options of {section}: {', '.join(names)}")


def _apply(target: Any, values: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Set the options in ``values`` (nested dicts for sections) on the dataclass ``target``."""
    hints = _hints(type(target))
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        name = key if key in hints else f"{key}_" if f"{key}_" in hints else None  # global -> global_
        if name is None:
            raise _unknown(target, where, source)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if isinstance(value, tp):
                setattr(target, name, copy.deepcopy(value))
                continue
            if not isinstance(value, Mapping):
                options = ", ".join(f.name for f in dataclasses.fields(tp))
                raise ValueError(f"{where} is a section, not an option: set one of its options "
                                 f"({where}.OPTION=value; options: {options}), got {value!r}")
            _apply(getattr(target, name), value, source, where)
        else:
            setattr(target, name, _coerce(value, tp, where))


def parse_overrides(items: Iterable[str]) -> Dict[str, Any]:
    """Parse ``["verify.num_to_rerank=20", "extract.sift.max_keypoints=500"]`` into nested dicts:
    ``{"verify": {"num_to_rerank": "20"}, "extract": {"sift": {"max_keypoints": "500"}}}``."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ValueError(f"Override {item!r} must look like section.option=value "
                             "(e.g. verify.num_to_rerank=20 or extract.sift.max_keypoints=500)")
        node = out
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"Override {item!r} conflicts with {'.'.join(parts[:i + 1])}={node}")
        if isinstance(node.get(parts[-1]), dict):
            raise ValueError(f"Override {item!r}: {key} is a section; set one of its options")
        node[parts[-1]] = value
    return out


def _validate(conf: Config) -> None:
    from .backends import BACKENDS

    if conf.extract.backend not in BACKENDS:
        raise ValueError(f"extract.backend: unknown backend {conf.extract.backend!r}; "
                         f"choose one of: {', '.join(BACKENDS)}")
    if conf.extract.train_local not in ("all", "candidates"):
        raise ValueError(f"extract.train_local: expected 'all' or 'candidates', got {conf.extract.train_local!r}")
    if conf.retrieve.k < conf.verify.num_to_rerank:
        conf.retrieve.k = conf.verify.num_to_rerank


def get_config(
    preset: Union[str, Config, None] = "default",
    overrides: Union[Mapping[str, Any], Iterable[str], None] = None,
) -> Config:
    """Build a configuration from a preset name and overrides.

    Args:
        preset: a name from :data:`PRESETS`, an existing :class:`Config` (copied), or None
            (``"default"``).
        overrides: nested dict ``{"verify": {"num_to_rerank": 20}, "extract": {"sift":
            {"max_keypoints": 500}}}`` or strings ``["verify.num_to_rerank=20",
            "extract.sift.max_keypoints=500"]``.

    Returns:
        A new :class:`Config`.

    Raises:
        KeyError: an unknown preset, section or option (the message lists the valid ones).
        ValueError: a value of the wrong type (the message names the option).
    """
    if isinstance(preset, Config):
        conf = copy.deepcopy(preset)
    else:
        name = preset or "default"
        if name not in PRESETS:
            raise KeyError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
        conf = Config(name=name)
        _apply(conf, PRESETS[name].settings, f"preset {name!r}")
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(overrides)
        _apply(conf, overrides, "overrides")
    _validate(conf)
    return conf


# --------------------------------------------------------------------------------------------
# Differences
# --------------------------------------------------------------------------------------------
def flatten(values: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"verify": {"num_to_rerank": 10}}`` -> ``{"verify.num_to_rerank": 10}`` (in order)."""
    out: Dict[str, Any] = {}
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            out.update(flatten(value, where))
        else:
            out[where] = value
    return out


def config_diff(a: Config, b: Config) -> List[Change]:
    """Settings that differ from ``a`` to ``b``: ``[("verify.num_to_rerank", 10, 20), ...]``.

    Keys are dotted (``extract.sift.max_keypoints``), in the order of the dataclasses; ``name``
    (the preset) counts as a setting.
    """
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return [(key, fa.get(key), fb.get(key)) for key in {**fa, **fb} if fa.get(key) != fb.get(key)]


def format_value(value: Any) -> str:
    """A setting as it is written after ``--set option=`` (``true``, ``none``, ``1.0,2.0``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    return str(value)


def format_changes(changes: Iterable[Change]) -> str:
    """``verify.num_to_rerank: 10 -> 20; predict.top_k: 5 -> 3``."""
    return "; ".join(f"{key}: {format_value(old)} -> {format_value(new)}" for key, old, new in changes)


def config_summary(conf: Config) -> str:
    """One line: ``preset demo + verify.num_to_rerank=20 predict.top_k=3`` (the settings that
    differ from the preset ``conf.name``, or from the defaults when it names no preset)."""
    if conf.name in PRESETS:
        base, what = get_config(conf.name), f"preset {conf.name}"
    else:
        base, what = Config(), f"configuration {conf.name!r}: defaults"
    changes = [c for c in config_diff(base, conf) if c[0] != "name"]
    if not changes:
        return f"{what} (unchanged)"
    return f"{what} + " + " ".join(f"{key}={format_value(new)}" for key, _, new in changes)


# --------------------------------------------------------------------------------------------
# A run's saved configuration (WORK/config.json)
# --------------------------------------------------------------------------------------------
def _upgrade(values: Mapping[str, Any]) -> Dict[str, Any]:
    """A saved configuration with the option names of earlier versions moved to their place now."""
    values = copy.deepcopy(dict(values))
    extract = values.get("extract")
    if isinstance(extract, dict):
        for old, new in RENAMED.items():
            key = old.split(".", 1)[1]
            if key in extract:
                section, option = new.split(".")[1:]
                extract.setdefault(section, {})[option] = extract.pop(key)
    return values


def read_run_config(work: Union[str, Path]) -> Optional[Config]:
    """The configuration saved in ``WORK/config.json``, or None when there is none.

    Raises:
        ValueError: the file cannot be read or holds unknown settings (the message names it).
    """
    path = config_path(work)
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
        conf = Config()
        _apply(conf, _upgrade(values), str(path))
        _validate(conf)
        return conf
    except (OSError, ValueError, KeyError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ValueError(f"Cannot use the saved configuration {path}: {reason}. Delete the file, or "
                         "pass --preset NAME to start from a preset (it is then replaced)") from None


def _read_or_ignore(work: Union[str, Path]) -> Optional[Config]:
    try:
        return read_run_config(work)
    except ValueError as exc:
        logger.warning("%s", exc)
        return None


def save_run_config(work: Union[str, Path], conf: Config) -> List[Change]:
    """Save ``conf`` as ``WORK/config.json`` (the steps that follow continue with it).

    When it changes the saved configuration, one warning names the settings that changed (an
    unreadable saved file is replaced, with a warning).

    Returns:
        The changes from the saved configuration ([] for a new work directory).
    """
    return _save(work, conf, _read_or_ignore(work))


def _save(work: Union[str, Path], conf: Config, saved: Optional[Config]) -> List[Change]:
    from .store import write_text_atomic

    path = config_path(work)
    changes = config_diff(saved, conf) if saved is not None else []
    if changes:
        logger.warning("Settings of the run in %s changed (saved in %s): %s", work, path.name,
                       format_changes(changes))
    text = conf.to_json() + "\n"
    try:
        same = path.read_text(encoding="utf-8") == text
    except (OSError, ValueError):
        same = False
    if not same:
        write_text_atomic(path, text)
    return changes


def resolve_run_config(work: Union[str, Path], preset: Optional[str] = None,
                       overrides: Union[Mapping[str, Any], Iterable[str], None] = None,
                       save: bool = True) -> Config:
    """The configuration a step runs with in ``work``: the run's, unless told otherwise.

    The base is ``preset`` when given, else the configuration saved in ``WORK/config.json``,
    else the ``default`` preset; ``overrides`` apply last. The settings that differ from the
    saved configuration are named in one warning.

    Args:
        work: the run's work directory.
        preset: a preset name; replaces the saved configuration.
        overrides: nested dict or ``"section.option=value"`` strings.
        save: save the result as the run's configuration (steps that write artifacts); False for
            commands that only read a run (``evaluate``, ``show``): the changes then apply to that
            command only.

    Raises:
        ValueError: ``WORK/config.json`` is unreadable and no ``preset`` was given.
    """
    saved = _read_or_ignore(work) if preset else read_run_config(work)
    conf = get_config(preset or saved or "default", overrides)
    if save:
        _save(work, conf, saved)
    elif saved is not None:
        changes = config_diff(saved, conf)
        if changes:
            logger.warning("Using settings that differ from the run's (%s, not changed): %s",
                           config_path(work), format_changes(changes))
    return conf
