"""Test images generated on the fly for the image-reading tests (never files in the repository).

A known pattern (colour gradients with a white marker in the top-left corner), where an EXIF
orientation puts the marker, and writers for what Pillow cannot write: 16-bit colour PNG and
TIFF (also with an Orientation tag) and PGM/PPM with any ``maxval`` and a header comment.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import List, Optional

import numpy as np
from PIL import Image

H, W = 48, 64
MARK = 8  # side of the white marker block


def pattern(h: int = H, w: int = W) -> np.ndarray:
    """RGB uint8 (h, w, 3): red grows along x, green along y, blue falls along the diagonal;
    a white MARK x MARK block in the top-left corner (where the gradients are (0, 0, 255))."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), 255 - (x + y) * 255 // (h + w - 2)], -1)
    img = img.astype(np.uint8)
    img[:MARK, :MARK] = 255
    return img


def gray_pattern(h: int = H, w: int = W) -> np.ndarray:
    """Greyscale uint8 (h, w): the pattern's mean, white marker top-left."""
    return pattern(h, w).mean(axis=2).round().astype(np.uint8)


def as_displayed(stored: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a viewer shows for ``stored`` with this EXIF orientation, from the EXIF
    table (where the stored 0th row / 0th column end up), independently of Pillow."""
    a = stored
    out = {
        1: a,                                # top / left
        2: a[:, ::-1],                       # top / right: mirrored
        3: a[::-1, ::-1],                    # bottom / right: rotated 180
        4: a[::-1],                          # bottom / left: flipped
        5: a.swapaxes(0, 1),                 # left / top: transposed
        6: np.rot90(a, -1),                  # right / top: rotated 90 clockwise
        7: a[::-1, ::-1].swapaxes(0, 1),     # right / bottom: transverse
        8: np.rot90(a, 1),                   # left / bottom: rotated 90 anticlockwise
    }[orientation]
    return np.ascontiguousarray(out)


#: displayed corner of the stored top-left marker per orientation
MARKER_CORNER = {1: "tl", 2: "tr", 3: "br", 4: "bl", 5: "tl", 6: "tr", 7: "br", 8: "bl"}


def marker_corners(img: np.ndarray, size: int = MARK) -> List[str]:
    """Corners whose size x size block is white (the marker)."""
    m = max(1, size - 2)
    blocks = {"tl": img[:m, :m], "tr": img[:m, -m:], "bl": img[-m:, :m], "br": img[-m:, -m:]}
    return [k for k, b in blocks.items() if b.min() > 215]


def check_rgb(arr: np.ndarray, h: int = H, w: int = W) -> None:
    assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.shape == (h, w, 3)
    assert arr.flags["C_CONTIGUOUS"]


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


# ---------------------------------------------------------------------------------------------
# Writers for what Pillow cannot write (16-bit colour, hand-made headers)
# ---------------------------------------------------------------------------------------------
def write_png16(path: Path, arr: np.ndarray) -> Path:
    """A 16-bit PNG from uint16 (H, W) grey, (H, W, 2) grey+alpha, (H, W, 3) RGB or (H, W, 4) RGBA."""
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = arr.astype(">u2").reshape(h, w * c)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def write_tiff16(path: Path, arr: np.ndarray, orientation: Optional[int] = None) -> Path:
    """An uncompressed little-endian 16-bit TIFF from uint16 (H, W) grey or (H, W, 3) RGB."""
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    data = arr.astype("<u2").tobytes()
    tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, c, 16), (259, 3, 1, 1), (262, 3, 1, 2 if c == 3 else 1),
            (273, 4, 1, 0), (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    if orientation:
        tags.append((274, 3, 1, orientation))
    tags.sort()
    bps_offset = 8 + 2 + 12 * len(tags) + 4
    bps = struct.pack(f"<{c}H", *[16] * c) if c > 2 else b""
    data_offset = bps_offset + len(bps)
    entries = b""
    for tag, typ, count, value in tags:
        if tag == 258 and c > 2:
            value = bps_offset
        elif tag == 273:
            value = data_offset
        field = struct.pack("<HH", value, 0) if typ == 3 and not (tag == 258 and c > 2) else struct.pack("<I", value)
        entries += struct.pack("<HHI", tag, typ, count) + field
    path.write_bytes(b"II*\x00" + struct.pack("<IH", 8, len(tags)) + entries + struct.pack("<I", 0) + bps + data)
    return path


def write_pnm(path: Path, arr: np.ndarray, maxval: int = 255) -> Path:
    """Binary PGM (P5, from (H, W)) or PPM (P6, from (H, W, 3)), 2 bytes a sample when maxval > 255."""
    magic = b"P5" if arr.ndim == 2 else b"P6"
    body = arr.astype(">u2" if maxval > 255 else np.uint8).tobytes()
    header = b"%s\n# written by the test\n%d %d\n%d\n" % (magic, arr.shape[1], arr.shape[0], maxval)
    path.write_bytes(header + body)
    return path


def save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path
