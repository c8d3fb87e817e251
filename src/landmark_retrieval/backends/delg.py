"""DELG backend: global and local features from a DELG SavedModel, one model call per image.

Two SavedModel styles exist and are both supported by :func:`load_delg`:

* **TF1** (``tf.compat.v1`` graph, e.g. the Kaggle ``delg-saved-models/local_and_global``
  model): ``tf.saved_model.load`` returns an object with ``.prune``. The model is called through
  ``prune(feeds, fetches)`` with the official tensor names; arguments are positional in feed
  order ``input_image:0`` (uint8 [H, W, 3]), ``input_scales:0`` (float32 [S]),
  ``input_abs_thres:0`` (float32 []), ``input_max_feature_num:0`` (int32 []) and, when the graph
  has it, ``input_global_scales_ind:0`` (int32 [G]).
* **TF2** (``tf.saved_model.save``): no ``prune``; ``signatures['serving_default']`` is called with
  every one of its inputs as keyword arguments and returns a dict.

Outputs: ``global_descriptors`` [S or G, D] (one row per scale), ``boxes`` [N, 4]
(``[ymin, xmin, ymax, xmax]`` original-image pixels), ``features`` [N, 128], ``scales`` [N]
(1 / image scale) and ``scores`` [N, 1] (attention). Post-processing (:func:`pool_global`,
:func:`boxes_to_keypoints`, :func:`l2_normalize`) is plain numpy.

TensorFlow is imported only when a model is loaded.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..config import ExtractConfig
from ..features import Features, l2_normalize
from ..io.images import resize_max_side, scale_keypoints_back
from .base import Backend, as_rgb_uint8, file_mentions, saved_model_file, short_error

logger = logging.getLogger("landmark_retrieval")

FEED_IMAGE = "input_image"
FEED_SCALES = "input_scales"
FEED_THRES = "input_abs_thres"
FEED_MAX_NUM = "input_max_feature_num"
FEED_GLOBAL_SCALES_IND = "input_global_scales_ind"
#: feed order of the TF1 ``prune`` call (the global-scales input only when the graph has it)
FEED_ORDER = (FEED_IMAGE, FEED_SCALES, FEED_THRES, FEED_MAX_NUM, FEED_GLOBAL_SCALES_IND)
OUT_GLOBAL = "global_descriptors"
LOCAL_OUTPUTS = ("boxes", "features", "scales", "scores")
FETCH_ORDER = (OUT_GLOBAL,) + LOCAL_OUTPUTS
#: smallest image side (after ``max_image_size``) that gets local features (official extractor)
MIN_SIDE = 10
DEFAULT_LOCAL_DIM = 128

_FIX = ("Pass --model the directory of a DELG SavedModel, the one holding saved_model.pb and "
        "variables/ (e.g. .../delg-saved-models/local_and_global), exported either as a TF1 graph "
        "with the official tensor names or with tf.saved_model.save (serving_default signature).")


class DelgModelError(ValueError):
    """The path is not a usable DELG SavedModel (message: path, what was found, the fix)."""


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


# ---------------------------------------------------------------------------------------------
# Pure post-processing (numpy)


def pool_global(raw: np.ndarray) -> np.ndarray:
    """Combine per-scale global descriptors the official way: L2 per row, sum, L2.

    Args:
        raw: (S, D) float, one (not normalised) descriptor per scale; a (D,) vector is one scale.

    Returns:
        (D,) float32, unit norm (all zeros only if every row is zero).
    """
    raw = np.asarray(raw, np.float32)
    if raw.ndim == 1:
        raw = raw[None]
    if raw.ndim != 2 or raw.shape[0] == 0:
        raise ValueError(f"expected global descriptors of shape (S>=1, D), got {raw.shape}")
    pooled = l2_normalize(raw).sum(axis=0)
    return l2_normalize(pooled[None])[0]


def boxes_to_keypoints(boxes: np.ndarray) -> np.ndarray:
    """Receptive-box centres as (x, y) keypoints.

    Args:
        boxes: (N, 4) float, ``[ymin, xmin, ymax, xmax]`` in pixels.

    Returns:
        (N, 2) float32 ``(x, y)`` = ``((xmin + xmax) / 2, (ymin + ymax) / 2)``.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.stack([(boxes[:, 1] + boxes[:, 3]) * 0.5, (boxes[:, 0] + boxes[:, 2]) * 0.5],
                    axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Loading


def looks_like_delg(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a SavedModel folder whose graph has DELG's ``input_scales`` input
    (both export styles do; read as bytes, TensorFlow is not imported)."""
    pb = saved_model_file(path)
    return pb is not None and file_mentions(pb, FEED_SCALES.encode())


class DelgModel:
    """A loaded DELG SavedModel with one calling convention for both export styles.

    Attributes:
        path: the SavedModel directory.
        style: ``"tf1"`` (``prune``) or ``"tf2"`` (``serving_default``).
        has_local / has_global: which heads the model exports.
        has_global_scales_ind: whether the model takes ``input_global_scales_ind``.
        local_dim / global_dim: output sizes when known statically, else None.
        exported_with: TensorFlow version that wrote a TF1 model (None if unknown).
    """

    def __init__(self, path: Path, obj, style: str, inputs: Sequence[str], outputs: Sequence[str],
                 local_dim: Optional[int], global_dim: Optional[int],
                 exported_with: Optional[str] = None, signature=None):
        self.path = path
        self.style = style
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.has_local = "boxes" in outputs
        self.has_global = OUT_GLOBAL in outputs
        self.has_global_scales_ind = FEED_GLOBAL_SCALES_IND in inputs
        self.local_dim = local_dim
        self.global_dim = global_dim
        self.exported_with = exported_with
        self._obj = obj  # keeps the loaded variables alive
        self._signature = signature
        self._pruned: Dict[Tuple[str, ...], object] = {}

    def __repr__(self) -> str:
        return (f"DelgModel({str(self.path)!r}, style={self.style!r}, local={self.has_local}, "
                f"global={self.has_global}, global_scales_ind={self.has_global_scales_ind})")

    def _tf1_function(self, fetches: Tuple[str, ...]):
        fn = self._pruned.get(fetches)
        if fn is None:
            feeds = [f"{name}:0" for name in self.inputs]
            fn = self._obj.prune(feeds, [f"{name}:0" for name in fetches])
            self._pruned[fetches] = fn
        return fn

    def __call__(self, image: np.ndarray, scales: Sequence[float], abs_thres: float = 175.0,
                 max_feature_num: int = 1000, global_scales_ind: Optional[Sequence[int]] = None,
                 fetch_local: bool = True, fetch_global: bool = True) -> Dict[str, np.ndarray]:
        """Run the model once.

        Args:
            image: (H, W, 3) uint8 RGB.
            scales: image scales (float32 [S]).
            abs_thres: attention threshold (float32).
            max_feature_num: maximum number of local features (int32).
            global_scales_ind: rows of ``scales`` used for the global descriptor; fed only to models
                with ``input_global_scales_ind`` (default there: every scale). Models without that
                input return one row per scale and ignore it (select rows yourself).
            fetch_local / fetch_global: outputs wanted (a TF1 model then computes only those; a
                TF2 signature always computes everything).

        Returns:
            The raw outputs present in the model among :data:`FETCH_ORDER`, as numpy arrays.
        """
        tf = _import_tf()
        values = {
            FEED_IMAGE: tf.constant(image, tf.uint8),
            FEED_SCALES: tf.constant(np.asarray(scales, np.float32).reshape(-1), tf.float32),
            FEED_THRES: tf.constant(float(abs_thres), tf.float32),
            FEED_MAX_NUM: tf.constant(int(max_feature_num), tf.int32),
        }
        if self.has_global_scales_ind:
            ind = range(len(scales)) if global_scales_ind is None else global_scales_ind
            values[FEED_GLOBAL_SCALES_IND] = tf.constant(np.asarray(list(ind), np.int32), tf.int32)
        if self.style == "tf1":
            fetches = tuple(name for name in FETCH_ORDER if name in self.outputs and (
                (name == OUT_GLOBAL and fetch_global) or (name != OUT_GLOBAL and fetch_local)))
            if not fetches:
                return {}
            result = self._tf1_function(fetches)(*[values[name] for name in self.inputs])
            return {name: np.asarray(t) for name, t in zip(fetches, result)}
        result = self._signature(**{name: values[name] for name in self.inputs})
        return {name: np.asarray(result[name]) for name in FETCH_ORDER if name in result}


def _dim(shape) -> Optional[int]:
    try:
        dim = shape[-1]
        return None if dim is None else int(dim)
    except (IndexError, TypeError, ValueError):
        return None


def _check_outputs(path: Path, inputs: Sequence[str], outputs: Sequence[str], found: str) -> None:
    problems: List[str] = []
    for name in (FEED_IMAGE, FEED_SCALES):
        if name not in inputs:
            problems.append(f"missing input {name!r}")
    if OUT_GLOBAL not in outputs and "boxes" not in outputs:
        problems.append(f"no output {OUT_GLOBAL!r} and no output 'boxes'")
    if "boxes" in outputs:
        for name in ("features", "scales", "scores"):
            if name not in outputs:
                problems.append(f"has 'boxes' but no output {name!r}")
        for name in (FEED_THRES, FEED_MAX_NUM):
            if name not in inputs:
                problems.append(f"has local outputs but no input {name!r}")
    if problems:
        raise DelgModelError(f"{path} is not a usable DELG SavedModel: {'; '.join(problems)} "
                             f"({found}). {_FIX}")


def load_delg(model_dir: Union[str, Path]) -> DelgModel:
    """Load a DELG SavedModel directory, TF1 (``prune``) or TF2 (``serving_default``) style.

    Raises:
        DelgModelError: missing directory, no ``saved_model.pb``, not loadable, neither style, or
            expected tensors missing; the message names the path, what was found and the fix.
    """
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise DelgModelError(f"DELG model directory {path} does not exist"
                             f"{' (it is a file)' if path.exists() else ''}. {_FIX}")
    if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
        listing = sorted(p.name for p in path.iterdir())[:20]
        raise DelgModelError(f"{path} holds no saved_model.pb (found: {listing or 'nothing'}). {_FIX}")
    tf = _import_tf()
    try:
        obj = tf.saved_model.load(str(path))
    except Exception as exc:  # corrupt protobuf, missing variables, unknown ops...
        raise DelgModelError(f"TensorFlow {tf.__version__} could not load the SavedModel at {path}: "
                             f"{type(exc).__name__}: {exc}. {_FIX}") from exc
    signatures = getattr(obj, "signatures", None)
    signature_names = sorted(signatures.keys()) if signatures is not None else []

    if hasattr(obj, "prune") and hasattr(obj, "graph"):
        style = "tf1"
        graph = obj.graph
        op_names = {op.name for op in graph.get_operations()}
        inputs = [name for name in FEED_ORDER if name in op_names]
        outputs = [name for name in FETCH_ORDER if name in op_names]
        found = f"TF1 graph with inputs {inputs} and outputs {outputs}"
        _check_outputs(path, inputs, outputs, found)
        local_dim = _dim(graph.get_tensor_by_name("features:0").shape) if "features" in outputs else None
        global_dim = (_dim(graph.get_tensor_by_name(f"{OUT_GLOBAL}:0").shape)
                      if OUT_GLOBAL in outputs else None)
        model = DelgModel(path, obj, style, inputs, outputs, local_dim, global_dim,
                          exported_with=getattr(obj, "tensorflow_version", None))
    elif "serving_default" in signature_names:
        style = "tf2"
        signature = signatures["serving_default"]
        in_specs = signature.structured_input_signature[1]
        out_specs = signature.structured_outputs
        unknown = sorted(set(in_specs) - set(FEED_ORDER))
        inputs = [name for name in FEED_ORDER if name in in_specs]
        outputs = [name for name in FETCH_ORDER if name in out_specs]
        found = (f"serving_default signature with inputs {sorted(in_specs)} and outputs "
                 f"{sorted(out_specs)}")
        if unknown:
            raise DelgModelError(f"{path} is not a usable DELG SavedModel: unknown signature inputs "
                                 f"{unknown} ({found}). {_FIX}")
        _check_outputs(path, inputs, outputs, found)
        local_dim = _dim(out_specs["features"].shape) if "features" in outputs else None
        global_dim = _dim(out_specs[OUT_GLOBAL].shape) if OUT_GLOBAL in outputs else None
        model = DelgModel(path, obj, style, inputs, outputs, local_dim, global_dim,
                          signature=signature)
    else:
        raise DelgModelError(
            f"{path} is a SavedModel but neither a TF1 DELG export (no .prune) nor a TF2 one "
            f"(no 'serving_default' signature; signatures found: {signature_names}). {_FIX}")

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    logger.info(
        "DELG model %s: %s-style SavedModel (%s), local=%s global=%s global_scales_ind=%s; "
        "TensorFlow %s on %s", path, style,
        "called through prune" if style == "tf1" else "called through serving_default",
        model.has_local, model.has_global, model.has_global_scales_ind, tf.__version__, device)
    if model.exported_with:
        logger.info("DELG model %s was exported with TensorFlow %s", path, model.exported_with)
    return model


# ---------------------------------------------------------------------------------------------
# Backend


class DelgBackend(Backend):
    """DELG features from a SavedModel: one model call per image gives global + local features.

    Local features: keypoints are receptive-box centres in original-image ``(x, y)`` pixels,
    descriptors L2-normalised, ``scores`` the attention, ``scales`` the model's 1 / image scale.
    Global: per-scale rows L2-normalised, summed and L2-normalised (:func:`pool_global`).
    """

    name = "delg"
    aggregator = None

    def __init__(self, conf: ExtractConfig):
        if conf.model_path is None:
            raise ValueError("The delg backend needs a DELG SavedModel directory: pass --model PATH "
                             "(extract.model_path), e.g. .../delg-saved-models/local_and_global")
        self.conf = conf
        delg = conf.delg
        self.scales = np.asarray(delg.scales, np.float32).reshape(-1)
        if self.scales.size == 0 or not np.all(self.scales > 0):
            raise ValueError(f"extract.delg.scales must be positive numbers, got {delg.scales}")
        self.global_scales_ind: Optional[Tuple[int, ...]] = None
        if delg.global_scales_ind is not None:
            ind = tuple(int(i) for i in delg.global_scales_ind)
            if not ind or min(ind) < 0 or max(ind) >= self.scales.size:
                raise ValueError(f"extract.delg.global_scales_ind {ind} must index extract.delg.scales "
                                 f"(0..{self.scales.size - 1})")
            self.global_scales_ind = ind
        self.model = load_delg(conf.model_path)
        self.want_local = bool(delg.local and self.model.has_local)
        self.want_global = bool(delg.global_ and self.model.has_global)
        if delg.local and not self.model.has_local:
            logger.warning("DELG model %s has no local head: local features will be empty",
                           self.model.path)
        if delg.global_ and not self.model.has_global:
            logger.warning("DELG model %s has no global head: no global descriptors",
                           self.model.path)
        self.local_dim = self.model.local_dim or DEFAULT_LOCAL_DIM

    def describe(self) -> dict:
        """The ``extract.delg`` section (``local``/``global_``: what the model can give too), the
        model's resolved path and export style, and ``max_image_size``."""
        out = super().describe()
        out["delg"].update(local=self.want_local, global_=self.want_global)
        return {**out, "model_path": str(self.model.path.resolve()), "style": self.model.style}

    def extract(self, image: np.ndarray, local: bool = True, global_: bool = True) -> Features:
        """Features of an RGB uint8 image (H, W, 3).

        Images whose smaller side is under :data:`MIN_SIDE` pixels (after ``max_image_size``) get
        no local features; their global descriptor is still computed when the network accepts
        them.

        Raises:
            ValueError: not an image, or the model failed on it (the message names the size).
        """
        image = as_rgb_uint8(image)
        height, width = image.shape[:2]
        resized, factors = resize_max_side(image, self.conf.max_image_size)
        rh, rw = resized.shape[:2]
        tiny = min(rh, rw) < MIN_SIDE
        local = self.want_local and local and not tiny
        want_global = self.want_global and global_
        if not (local or want_global) or min(rh, rw) < 1:
            return Features.empty(self.local_dim, (width, height))
        try:
            out = self.model(resized, self.scales, self.conf.delg.score_threshold,
                             self.conf.delg.max_keypoints, self.global_scales_ind,
                             fetch_local=local, fetch_global=want_global)
        except MemoryError:
            raise
        except Exception as exc:  # TF errors (e.g. an image too small for a scale)
            raise ValueError(f"DELG extraction failed on a {width}x{height} image (model input "
                             f"{rw}x{rh}, scales {self.scales.tolist()}): "
                             f"{type(exc).__name__}: {short_error(exc)}") from exc

        global_descriptor = None
        if want_global:
            raw = out[OUT_GLOBAL]
            if self.global_scales_ind is not None and not self.model.has_global_scales_ind:
                raw = raw[list(self.global_scales_ind)]
            global_descriptor = pool_global(raw)
        if not local:
            return Features.empty(self.local_dim, (width, height), global_descriptor)

        descriptors = l2_normalize(out["features"])
        self.local_dim = int(descriptors.shape[1])
        keypoints = scale_keypoints_back(boxes_to_keypoints(out["boxes"]), factors)
        return Features(
            keypoints=np.ascontiguousarray(keypoints, np.float32),
            descriptors=descriptors,
            scores=np.asarray(out["scores"], np.float32).reshape(-1),
            scales=np.asarray(out["scales"], np.float32).reshape(-1),
            image_size=(width, height),
            global_descriptor=global_descriptor,
        )
