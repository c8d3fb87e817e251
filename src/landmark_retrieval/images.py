"""Image decoding: any file PIL reads becomes an RGB uint8 array, orientation applied.

Also a prefetching iterator so that feature extractors never wait on JPEG decoding.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps

logger = logging.getLogger("landmark_retrieval")

# Decode what is there of a truncated JPEG instead of raising.
ImageFile.LOAD_TRUNCATED_IMAGES = True


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to an RGB uint8 array (H, W, 3).

    EXIF orientation is applied; grayscale, palette, RGBA/LA (alpha dropped), CMYK,
    16-bit and float images are converted.
    """
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if mode.startswith("I;16") or (mode == "I" and lo >= 0 and 255 < hi <= 65535):
            arr = arr / 257.0  # 16-bit (older Pillow opens 16-bit PNGs as mode "I")
        elif mode == "I" and lo >= 0 and hi <= 255:
            pass  # 8-bit values in a 32-bit container
        else:
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)


def read_image(path: Union[str, Path]) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3).

    Raises:
        FileNotFoundError: no file at ``path``.
        IOError: the file is not a decodable image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No image at {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb_uint8(img)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise IOError(f"Could not decode image {path}: {exc}") from exc


def resize_max_side(image: np.ndarray, max_size: Optional[int]) -> Tuple[np.ndarray, Tuple[float, float]]:
    """Shrink ``image`` so that ``max(H, W) <= max_size`` (bilinear, never enlarges).

    Returns:
        The resized image and ``(sx, sy)``: new size / original size along x and y. Keypoints
        found on the resized image map back to the original with ``(x + 0.5) / sx - 0.5``.
    """
    h, w = image.shape[:2]
    if not max_size or max(h, w) <= max_size:
        return image, (1.0, 1.0)
    s = max_size / float(max(h, w))
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    return resized, (nw / w, nh / h)


def scale_keypoints_back(keypoints: np.ndarray, factors: Tuple[float, float]) -> np.ndarray:
    """Map (x, y) pixel keypoints on a resized image back to the original image (pixel centres)."""
    if factors == (1.0, 1.0) or len(keypoints) == 0:
        return keypoints.astype(np.float32, copy=False)
    sx, sy = factors
    out = np.empty_like(keypoints, dtype=np.float32)
    out[:, 0] = (keypoints[:, 0] + 0.5) / sx - 0.5
    out[:, 1] = (keypoints[:, 1] + 0.5) / sy - 0.5
    return out


def iter_images(
    items: Iterable[Tuple[str, Path]], num_workers: int = 2, prefetch: int = 8
) -> Iterator[Tuple[str, Optional[np.ndarray], Optional[str]]]:
    """Decode images in background threads, in input order.

    Args:
        items: ``(image_id, path)`` pairs.
        num_workers: decoding threads (PIL releases the GIL while decoding).
        prefetch: images decoded ahead of the consumer (bounds memory).

    Yields:
        ``(image_id, image, None)`` or ``(image_id, None, error message)`` for a bad file.
    """
    def load(path: Path):
        try:
            return read_image(path), None
        except Exception as exc:  # a bad image never stops a run
            return None, f"{type(exc).__name__}: {exc}"

    iterator = iter(items)
    with cf.ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        pending: deque = deque()
        for image_id, path in iterator:
            pending.append((image_id, pool.submit(load, path)))
            if len(pending) >= max(1, prefetch):
                break
        while pending:
            image_id, fut = pending.popleft()
            nxt = next(iterator, None)
            if nxt is not None:
                pending.append((nxt[0], pool.submit(load, nxt[1])))
            image, error = fut.result()
            yield image_id, image, error
