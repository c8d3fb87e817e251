"""What an embedding model is fed and what it gives back, as pure numpy: resizing policies,
pixel scaling, channel order and layout, GeM/avg/max pooling of its output, and the checks of the
``extract.embedding`` choices."""
from __future__ import annotations

import logging
import math
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from ..config import EmbeddingConfig
from ..overrides import format_value

logger = logging.getLogger("landmark_retrieval")



IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, of 0-1 pixels


IMAGENET_STD = (0.229, 0.224, 0.225)


CAFFE_MEAN = (123.68, 116.779, 103.939)  # RGB, of 0-255 pixels (keras.applications "caffe" mode)


GEM_EPS = 1e-6


def _resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _fit(h: int, w: int, th: int, tw: int) -> Tuple[int, int]:
    s = min(th / h, tw / w)
    return max(1, min(th, int(round(h * s)))), max(1, min(tw, int(round(w * s))))


def resize_for_model(image: np.ndarray, policy: str, size: Optional[Tuple[int, int]],
                     scale: float = 1.0) -> np.ndarray:
    """Resize an image for the model (bilinear, PIL: antialiased when shrinking).

    Args:
        image: (H, W, 3) uint8.
        policy: ``resize`` (to ``size`` x ``scale``, aspect not kept), ``keep_aspect`` (fit inside
            it keeping the aspect ratio, then pad with black to exactly that size, image centred),
            ``fit`` (fit inside it, no padding: the longer side reaches it) or ``none`` (the image
            times ``scale``).
        size: ``(height, width)`` of the model input at scale 1 (unused by ``none``).
        scale: multiplier of ``size`` (of the image size for ``none``).

    Returns:
        (h, w, 3) uint8.
    """
    h, w = image.shape[:2]
    if policy == "none":
        if scale == 1.0:
            return image
        return _resized(image, max(1, int(round(h * scale))), max(1, int(round(w * scale))))
    if size is None:
        raise ValueError(f"resize policy {policy!r} needs an input size")
    th, tw = max(1, int(round(size[0] * scale))), max(1, int(round(size[1] * scale)))
    if policy == "resize":
        return _resized(image, th, tw)
    nh, nw = _fit(h, w, th, tw)
    fitted = _resized(image, nh, nw)
    if policy == "fit":
        return fitted
    if policy != "keep_aspect":
        raise ValueError(f"unknown resize policy {policy!r}")
    out = np.zeros((th, tw, image.shape[2]), np.uint8)
    top, left = (th - nh) // 2, (tw - nw) // 2
    out[top:top + nh, left:left + nw] = fitted
    return out


def scale_pixels(image: np.ndarray, scaling: str) -> np.ndarray:
    """RGB uint8 pixels (H, W, 3) -> float32 model values (H, W, 3), still RGB.

    ``0-255``: unchanged; ``0-1``: x / 255; ``-1-1``: x / 127.5 - 1; ``imagenet``:
    (x / 255 - mean) / std with the ImageNet RGB mean (0.485, 0.456, 0.406) and std
    (0.229, 0.224, 0.225); ``caffe``: x - (123.68, 116.779, 103.939) (no division).
    """
    x = np.asarray(image, np.float32)
    if scaling == "0-255":
        return x
    if scaling == "0-1":
        return x / np.float32(255.0)
    if scaling == "-1-1":
        return x / np.float32(127.5) - np.float32(1.0)
    if scaling == "imagenet":
        return (x / np.float32(255.0) - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    if scaling == "caffe":
        return x - np.asarray(CAFFE_MEAN, np.float32)
    raise ValueError(f"unknown pixel scaling {scaling!r}")


def to_model_input(x: np.ndarray, channel_order: str = "RGB", layout: str = "NHWC",
                   batch: bool = True, dtype=np.float32) -> np.ndarray:
    """Scaled RGB values (H, W, 3) -> the model's input: channels reordered (``BGR``), channels
    moved first (``NCHW``), a batch dimension of 1 (``batch``), cast to ``dtype``.

    Returns:
        (1, H, W, 3), (1, 3, H, W), or the same without the batch dimension; C-contiguous.
    """
    if channel_order == "BGR":
        x = x[..., ::-1]
    if layout == "NCHW":
        x = np.transpose(x, (2, 0, 1))
    if batch:
        x = x[None]
    return np.ascontiguousarray(x, dtype=dtype)


def pool_output(y: np.ndarray, pooling: str = "gem", layout: str = "NHWC", gem_p: float = 3.0) -> np.ndarray:
    """One image's model output -> a (D,) float32 vector (not normalised).

    A leading batch dimension of 1 is dropped. A vector (D,) is returned as it is. A feature map
    (H, W, C), or (C, H, W) for ``layout="NCHW"`` (turned into (H, W, C) first), and a token
    sequence (N, C) are pooled over their positions: ``gem`` (mean of ``max(x, 1e-6) ** p``, then
    ``** (1 / p)``), ``avg``, ``max``, or ``none`` (flattened in (H, W, C) order).

    Raises:
        ValueError: an output of another rank.
    """
    y = np.asarray(y, np.float32)
    if y.ndim >= 2 and y.shape[0] == 1:
        y = y[0]
    if y.ndim == 1:
        return y
    if y.ndim == 3 and layout == "NCHW":
        y = np.transpose(y, (1, 2, 0))
    if y.ndim not in (2, 3):
        raise ValueError(f"expected a vector, a feature map or a token sequence, got an output of shape {y.shape}")
    if pooling == "none":
        return y.reshape(-1)
    positions = y.reshape(-1, y.shape[-1])
    if pooling == "avg":
        return positions.mean(axis=0)
    if pooling == "max":
        return positions.max(axis=0)
    if pooling == "gem":
        p = np.float64(gem_p)
        pooled = np.mean(np.maximum(positions.astype(np.float64), GEM_EPS) ** p, axis=0) ** (1.0 / p)
        return pooled.astype(np.float32)
    raise ValueError(f"unknown pooling {pooling!r}")


#: the values of the choice options of ``extract.embedding`` (matched case-insensitively)
EMBEDDING_CHOICES: Dict[str, Tuple[str, ...]] = {
    "format": ("auto", "keras", "savedmodel", "onnx", "torchscript", "torch", "named"),
    "resize": ("resize", "keep_aspect", "fit", "none"),
    "scaling": ("0-255", "0-1", "-1-1", "imagenet", "caffe"),
    "channel_order": ("RGB", "BGR"),
    "layout": ("auto", "NHWC", "NCHW"),
    "pooling": ("gem", "avg", "max", "none"),
}


def validate_embedding(e: EmbeddingConfig, where: str) -> None:
    """Check the ``extract.embedding`` options (``where`` names the section); choices are stored
    in their canonical spelling (``nchw`` -> ``NCHW``)."""
    for name, choices in EMBEDDING_CHOICES.items():
        value = getattr(e, name)
        canonical = {c.lower(): c for c in choices}.get(str(value).strip().lower())
        if canonical is None:
            raise ValueError(f"{where}.{name}: expected one of {', '.join(choices)}, got {value!r}")
        setattr(e, name, canonical)
    if e.input_size is not None and e.input_size < 1:
        raise ValueError(f"{where}.input_size: expected a positive number of pixels or none (the model's "
                         f"input size), got {e.input_size}")
    if not e.scales or not all(math.isfinite(v) and v > 0 for v in e.scales):
        raise ValueError(f"{where}.scales: expected positive numbers, e.g. 1.0 or 0.7071,1.0,1.4142, "
                         f"got {format_value(e.scales) or 'nothing'}")
    if not (math.isfinite(e.gem_p) and e.gem_p > 0):
        raise ValueError(f"{where}.gem_p: expected a positive number (3 is usual), got {e.gem_p}")
