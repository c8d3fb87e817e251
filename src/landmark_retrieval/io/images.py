"""Image decoding: any file PIL reads becomes an RGB uint8 array, orientation applied.

Every place that reads images goes through this module. Formats (see ``IMAGE_SUFFIXES`` and
:func:`is_image_file` for the folder listings): JPEG (also CMYK), PNG, WebP, TIFF, BMP,
PPM/PGM/PNM (P5/P6, 8 and 16 bit), GIF, and HEIC/HEIF when the optional ``pillow-heif``
package is installed (otherwise such a file is an error that names ``pip install pillow-heif``).
Multi-page TIFF, animated GIF and animated WebP: the first page/frame.

Pixels come back as displayed: the EXIF orientation (1-8) is applied for every format that
carries it (JPEG, PNG, WebP, TIFF). Conversion to RGB uint8 (H, W, 3):

* 16-bit samples (PNG, TIFF, PGM/PPM): ``v / 257`` (0 -> 0, 65535 -> 255; within 1 of the
  high byte), never clipped; a PGM/PPM with another ``maxval`` is scaled by ``maxval``;
* greyscale (``1``, ``L``, ``LA``, ``I;16``, ``I``, ``F``): three equal channels; 32-bit
  integer images with values in 0-255 are taken as they are, in 256-65535 as 16-bit, float
  images in [0, 1] are multiplied by 255; other ranges are stretched to 0-255;
* alpha (``RGBA``, ``LA``, ``PA``, a palette with transparency) is composited on white;
* palette, CMYK and other modes are converted by PIL.

Memory stays bounded whatever the file: an image of more than ``max_pixels`` pixels is decoded
at reduced size (JPEG DCT scaling through PIL ``draft``, then a bilinear resize), so a
12000 x 12000 photo never exists at full size in memory. Files that declare more pixels than
PIL's decompression-bomb limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``, 179 MP) are refused.

A truncated file is decoded as far as its data goes and reported ("decoded with errors").

Also a prefetching iterator so that feature extractors never wait on decoding.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import os
import threading
import warnings
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet, Iterable, Iterator, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

logger = logging.getLogger("landmark_retrieval")

#: EXIF orientations that swap width and height
_TRANSPOSING = (5, 6, 7, 8)

#: Suffixes of image files, lower case; :func:`is_image_file` compares them case-insensitively
IMAGE_SUFFIXES: FrozenSet[str] = frozenset({
    ".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".ppm", ".pgm", ".pnm", ".gif",
    ".heic", ".heif",
})
#: Suffixes that need the optional ``pillow-heif`` package
HEIF_SUFFIXES: FrozenSet[str] = frozenset({".heic", ".heif"})
#: ISO base media ``ftyp`` brands of HEIF files (a HEIC photo renamed to .jpg is recognised too)
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1")
HEIF_HINT = "HEIC/HEIF images need the pillow-heif package: pip install pillow-heif"


class ImageTooLargeError(IOError):
    """An image declares more pixels than can be decoded safely (a decompression bomb?)."""


@dataclass
class DecodedImage:
    """An image as decoded for feature extraction.

    ``array`` is RGB uint8 (h, w, 3), possibly smaller than the file (``max_pixels``);
    ``original_size`` is the file's (width, height) after EXIF orientation; ``warning`` says
    when the file decoded with errors (e.g. truncated data).
    """

    array: np.ndarray
    original_size: Tuple[int, int]
    warning: Optional[str] = None

    @property
    def factors(self) -> Tuple[float, float]:
        """(sx, sy): decoded size / original size (1.0 when decoded at full size)."""
        h, w = self.array.shape[:2]
        return w / self.original_size[0], h / self.original_size[1]


class _TruncationGate:
    """Readers-writer lock around PIL's process-wide ``LOAD_TRUNCATED_IMAGES`` switch.

    Normal decodes run concurrently with the switch off (so a truncated file raises and is
    noticed); a truncated file is then decoded again alone, with the switch on.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def strict(self):
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def lenient(self):
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
            with self._cond:
                self._writer = False
                self._cond.notify_all()


_GATE = _TruncationGate()


def is_image_file(name: Union[str, "os.PathLike[str]"]) -> bool:
    """True when a file name is one of the images a folder listing should pick up.

    The suffix must be one of :data:`IMAGE_SUFFIXES`, in any case (``a.JPG``, ``b.Tiff``).
    Hidden files (a name starting with ``.``) never are: macOS writes ``._IMG_1.jpg``
    AppleDouble files (metadata, not images) next to every photo on non-Apple disks.
    """
    base = os.path.basename(os.fspath(name))
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_SUFFIXES


_HEIF_LOCK = threading.Lock()
#: None until tried; then whether pillow-heif's opener is registered with PIL
_heif_registered: Optional[bool] = None


def _register_heif() -> bool:
    """Register pillow-heif's HEIC/HEIF opener with PIL once; False when it is not installed."""
    global _heif_registered
    with _HEIF_LOCK:
        if _heif_registered is None:
            try:
                from pillow_heif import register_heif_opener
                register_heif_opener()
                _heif_registered = True
            except ImportError:
                _heif_registered = False
            except Exception as exc:  # an installed but broken pillow-heif: say so once
                logger.warning("pillow-heif is installed but could not be loaded (%s): HEIC/HEIF images "
                               "cannot be read; reinstall it with pip install --force-reinstall pillow-heif", exc)
                _heif_registered = False
        return _heif_registered


def _looks_like_heif(path: Path) -> bool:
    """A .heic/.heif name, or an ISO media file whose ``ftyp`` brand is HEIF."""
    if path.suffix.lower() in HEIF_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _open(path: Path) -> Image.Image:
    """``Image.open`` with HEIF support when available and the decompression-bomb warning off."""
    if path.suffix.lower() in HEIF_SUFFIXES:
        _register_heif()
    with warnings.catch_warnings():
        # sizes between PIL's warning and error limits are handled by reduced decoding
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except UnidentifiedImageError:
            if not _looks_like_heif(path):
                raise
            if not _register_heif():
                raise IOError(HEIF_HINT) from None
            return Image.open(path)  # the opener may have been registered just now


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to an RGB uint8 array (H, W, 3).

    EXIF orientation is applied; grayscale, palette, RGBA/LA (alpha composited on white),
    CMYK, 16-bit and float images are converted (see the module docstring).
    """
    sixteen_bit = _is_16bit(img)  # before transposing: the transposed image has no format
    return _to_rgb(ImageOps.exif_transpose(img), sixteen_bit)


def _is_16bit(img: Image.Image) -> bool:
    """Mode ``I`` that holds 16-bit samples: a 16-bit PGM/PPM, or a 16-bit PNG in older Pillow."""
    return img.mode == "I" and img.format in ("PNG", "PPM")


def _to_rgb(img: Image.Image, sixteen_bit: bool = False) -> np.ndarray:
    """RGB uint8 (H, W, 3) of ``img`` as it is (no orientation); ``sixteen_bit``: mode ``I`` holds 0-65535."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if mode.startswith("I;16") or (mode == "I" and (sixteen_bit or (lo >= 0 and 255 < hi <= 65535))):
            arr = arr / 257.0  # 16-bit, whatever the values (a dark 16-bit image stays dark)
        elif mode == "I" and lo >= 0 and hi <= 255:
            pass  # 8-bit values in a 32-bit container
        elif mode == "F" and lo >= 0 and hi <= 1:
            arr = arr * 255.0  # float images in [0, 1], the usual convention
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


def _target_size(width: int, height: int, max_pixels: Optional[int]) -> Optional[Tuple[int, int]]:
    """Largest (w, h) with the same aspect and at most ``max_pixels`` pixels, or None if it fits."""
    if not max_pixels or width * height <= max_pixels:
        return None
    s = math.sqrt(max_pixels / float(width * height))
    return max(1, int(width * s)), max(1, int(height * s))


#: EXIF orientation -> the transposition that shows the image upright
_ORIENT = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,), 3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,), 5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,), 7: (Image.Transpose.TRANSVERSE,), 8: (Image.Transpose.ROTATE_90,),
}


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8) of ``img``; 1 when absent or damaged."""
    try:
        value = int(img.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block is not worth losing the image
        return 1
    return value if 1 <= value <= 8 else 1


def _decode(path: Path, max_pixels: Optional[int]) -> Tuple[np.ndarray, Tuple[int, int]]:
    img = _open(path)
    with img:
        width, height = img.size  # the full size, before any DCT scaling
        sixteen_bit = _is_16bit(img)
        target = _target_size(width, height, max_pixels)
        if target is not None and img.format == "JPEG":
            img.draft("RGB", target)  # DCT scaling: decode at 1/2, 1/4 or 1/8 size, never below target
        img.load()
        # read after load: recent Pillow turns TIFFs upright itself while loading (their size is
        # upright from the start) and then drops the orientation tag; older Pillow does not
        orientation = _orientation(img)
        original = (height, width) if orientation in _TRANSPOSING else (width, height)
        if target is not None:
            if img.mode not in ("RGB", "RGBA", "L", "LA"):  # palette, CMYK, 16-bit, ...: convert first
                img = Image.fromarray(_to_rgb(img, sixteen_bit))
            img = img.resize(target, Image.BILINEAR)
        for op in _ORIENT.get(orientation, ()):
            img = img.transpose(op)
        return _to_rgb(img, sixteen_bit), original


def decode_image(path: Union[str, Path], max_pixels: Optional[int] = None) -> DecodedImage:
    """Decode an image file for feature extraction, in bounded memory.

    Args:
        path: image file (any format PIL reads; HEIC/HEIF with pillow-heif installed).
        max_pixels: decode images with more pixels than this at reduced size (same aspect,
            at most ``max_pixels``); None decodes at full size.

    Returns:
        A :class:`DecodedImage`; ``warning`` is set when the file decoded with errors.

    Raises:
        FileNotFoundError: no file at ``path``.
        ImageTooLargeError: the file declares more pixels than PIL's decompression-bomb limit.
        IOError: the file is not a decodable image (for HEIC/HEIF without pillow-heif, the
            message names ``pip install pillow-heif``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No image at {path}")
    try:
        try:
            with _GATE.strict():
                array, original = _decode(path, max_pixels)
            return DecodedImage(array, original)
        except OSError as exc:
            if "truncated" not in str(exc) and "broken data stream" not in str(exc):
                raise
            with _GATE.lenient():
                array, original = _decode(path, max_pixels)
            return DecodedImage(array, original, f"decoded with errors ({exc})")
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"Refused image {path}: {exc} Such a file is a decompression bomb or needs resizing "
            "before use") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        # PIL's UnidentifiedImageError is an OSError
        raise IOError(f"Could not decode image {path}: {exc}") from exc


def read_image(path: Union[str, Path], max_pixels: Optional[int] = None) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3) (see :func:`decode_image`)."""
    return decode_image(path, max_pixels).array


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
    items: Iterable[Tuple[str, Path]], num_workers: int = 2, prefetch: int = 8,
    max_pixels: Optional[int] = None,
) -> Iterator[Tuple[str, Optional[DecodedImage], Optional[str]]]:
    """Decode images in background threads, in input order.

    Args:
        items: ``(image_id, path)`` pairs.
        num_workers: decoding threads (PIL releases the GIL while decoding).
        prefetch: images decoded ahead of the consumer (bounds memory).
        max_pixels: see :func:`decode_image`.

    Yields:
        ``(image_id, decoded, None)`` or ``(image_id, None, error message)`` for a bad file.
    """
    def load(path: Path):
        try:
            return decode_image(path, max_pixels), None
        except Exception as exc:  # a bad image never stops a run
            return None, f"{type(exc).__name__}: {exc}"

    iterator = iter(items)
    with cf.ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        pending: deque = deque()
        for image_id, path in iterator:
            pending.append((image_id, pool.submit(load, path)))
            if len(pending) >= max(1, prefetch):
                break
        try:
            while pending:
                image_id, fut = pending.popleft()
                nxt = next(iterator, None)
                if nxt is not None:
                    pending.append((nxt[0], pool.submit(load, nxt[1])))
                image, error = fut.result()
                yield image_id, image, error
        finally:
            for _, fut in pending:  # an interrupted consumer: do not decode what nobody reads
                fut.cancel()
