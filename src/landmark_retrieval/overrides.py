"""``--set section.option=value`` overrides: typed parsing into :class:`~landmark_retrieval.config.Config`.

Values are coerced to the type of the dataclass field they set (``true``/``false``, numbers,
comma-separated tuples, ``none`` for optional fields, JSON records for lists of records such as
``extract.ensemble.members``); an unknown section or option raises :class:`KeyError` listing the
valid ones, a value of the wrong type :class:`ValueError` naming the option.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import numbers
import os
import typing
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Tuple, Union

from .config import field_types

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")



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


_NOUNS = {int: "integer", float: "number", str: "string"}


def coerce_scalar(value: Any, base: type, where: str) -> Any:
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


def _is_records(elem: Any) -> bool:
    return typing.get_origin(elem) is dict or elem is dict


RECORDS_EXAMPLE = '[{"backend": "embedding", "model_path": "model.keras", "weight": 1.0}]'


def _records(value: Any, where: str) -> Tuple[Dict[str, Any], ...]:
    """A list of JSON objects (a JSON string from ``--set``, or lists/dicts from Python) as a tuple
    of plain JSON dicts (tuples become lists, so a saved and re-read value compares equal)."""
    what = f"expected a JSON list of objects, e.g. {RECORDS_EXAMPLE}"
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {what}; not valid JSON ({exc}): {value!r}") from None
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: {what}, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}[{i}]: expected an object ({{\"backend\": ...}}), got {item!r}")
        try:
            out.append(json.loads(json.dumps(dict(item), default=os.fspath)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}[{i}]: not representable as JSON ({exc}): {item!r}") from None
    return tuple(out)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a CLI string or a notebook value to the type of a config field."""
    optional, base, elem = _kind(tp)
    if base is tuple and _is_records(elem):
        return _records(value, where)
    text = value.strip().lower() if isinstance(value, str) else None
    if value is None or text in ("none", "null", ""):
        if optional:
            return None
        what = _EXPECTED.get(base, "a value") if base is not tuple else f"comma-separated {_NOUNS[elem]}s"
        raise ValueError(f"{where}: expected {what}, got {value!r} (this option cannot be none)")
    if base is tuple:
        example = {float: "0.5,1.0", int: "0,2", str: "a,b"}[elem]
        what = f"comma-separated {_NOUNS[elem]}s, e.g. {example}"
        if isinstance(value, str) and elem is str:
            items: Iterable[Any] = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, str):
            items = [v for v in value.replace(" ", "").strip("()[]").split(",") if v]
        elif isinstance(value, (list, tuple)):
            items = value
        else:
            raise ValueError(f"{where}: expected {what}, got {value!r}")
        try:
            return tuple(coerce_scalar(v, elem, where) for v in items)
        except ValueError:
            raise ValueError(f"{where}: expected {what}, got {value!r}") from None
    return coerce_scalar(value, base, where)


def _unknown(target: Any, where: str, source: str) -> KeyError:
    names = [f.name for f in dataclasses.fields(target)]
    section = where.rsplit(".", 1)[0] if "." in where else ""
    if not section:
        return KeyError(f"Unknown config section {where!r} in {source}; expected one of: {', '.join(names)}")
    hint = f" ({where} is now {RENAMED[where]})" if where in RENAMED else ""
    return KeyError(f"Unknown option {where} in {source}{hint}; valid options of {section}: {', '.join(names)}")


def apply_settings(target: Any, values: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Set the options in ``values`` (nested dicts for sections) on the dataclass ``target``."""
    hints = field_types(type(target))
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
            apply_settings(getattr(target, name), value, source, where)
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


def format_value(value: Any) -> str:
    """A setting as it is written after ``--set option=`` (``true``, ``none``, ``1.0,2.0``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)) and any(isinstance(v, Mapping) for v in value):
        return json.dumps(list(value))  # ensemble members: the JSON that --set takes
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    return str(value)


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
