"""16-bit and wide samples (PNG, TIFF, PGM/PPM, 32-bit integer and float TIFF) become uint8
by scaling (``v / 257``, or by the PGM/PPM ``maxval``), never by clipping; alpha on white."""
from __future__ import annotations

import numpy as np
import pytest
from _image_samples import H, W, check_rgb, gray_pattern, save, write_png16, write_pnm, write_tiff16
from PIL import Image

from landmark_retrieval.io.images import read_image


def values16(h: int = H, w: int = W) -> np.ndarray:
    """uint16 (h, w): a full-range ramp with the edge values in the first row."""
    v = np.linspace(0, 65535, h * w).round().astype(np.uint16).reshape(h, w)
    v[0, :9] = [0, 1, 255, 256, 257, 1000, 32767, 65280, 65535]
    return v


def rgb16() -> np.ndarray:
    v = values16()
    return np.dstack([v, 65535 - v, np.roll(v, 7, axis=1)])


def assert_16bit(out: np.ndarray, v: np.ndarray) -> None:
    """``out`` is ``v / 257`` rounded (within 1 of the high byte); the contract, not clipping."""
    expected = v.astype(np.float64) / 257
    assert np.abs(out.astype(np.float64) - expected).max() < 1
    assert (out[v == 65535] == 255).all() and (out[v <= 128] == 0).all()
    assert set(out[v == 1000].tolist()) <= {3, 4}  # scaled, not clipped to 255


GREY16 = {
    "png (Pillow)": lambda p, v: save(Image.fromarray(v), p / "g.png"),
    "png (by hand)": lambda p, v: write_png16(p / "g.png", v),
    "tiff (Pillow)": lambda p, v: save(Image.fromarray(v), p / "g.tif"),
    "tiff (by hand)": lambda p, v: write_tiff16(p / "g.tif", v),
    "pgm P5": lambda p, v: write_pnm(p / "g.pgm", v, 65535),
}
RGB16 = {
    "png": lambda p, v: write_png16(p / "c.png", v),
    "tiff": lambda p, v: write_tiff16(p / "c.tif", v),
    "ppm P6": lambda p, v: write_pnm(p / "c.ppm", v, 65535),
}


@pytest.mark.parametrize("name", list(GREY16))
def test_16bit_greyscale(tmp_path, name):
    v = values16()
    out = read_image(GREY16[name](tmp_path, v))
    check_rgb(out)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert_16bit(out[..., 0], v)


@pytest.mark.parametrize("name", list(GREY16))
def test_dark_16bit_greyscale_stays_dark(tmp_path, name):
    """Values all below 256 are still 16-bit samples: near black, not read as 8-bit."""
    v = (np.arange(H * W).reshape(H, W) % 256).astype(np.uint16)
    out = read_image(GREY16[name](tmp_path, v))
    assert out.max() <= 1


@pytest.mark.parametrize("name", list(RGB16))
def test_16bit_colour(tmp_path, name):
    v = rgb16()
    out = read_image(RGB16[name](tmp_path, v))
    check_rgb(out)
    for c in range(3):
        assert_16bit(out[..., c], v[..., c])


def test_16bit_png_with_alpha(tmp_path):
    v = values16()
    alpha = np.where(np.arange(W) < W // 2, 65535, 0).astype(np.uint16)[None].repeat(H, 0)
    for name, arr in [("ga.png", np.dstack([v, alpha])), ("rgba.png", np.dstack([rgb16(), alpha]))]:
        out = read_image(write_png16(tmp_path / name, arr))
        check_rgb(out)
        assert_16bit(out[:, : W // 2, 0], v[:, : W // 2])
        np.testing.assert_array_equal(out[:, W // 2:], 255)


@pytest.mark.parametrize("maxval", [1023, 4095])
def test_pgm_and_ppm_with_another_maxval_are_scaled_by_it(tmp_path, maxval):
    v = (values16().astype(np.int64) * maxval // 65535).astype(np.uint16)
    for out in (read_image(write_pnm(tmp_path / "g.pgm", v, maxval)),
                read_image(write_pnm(tmp_path / "c.ppm", np.dstack([v, v, v]), maxval))):
        check_rgb(out)
        assert np.abs(out[..., 0] - v * 255.0 / maxval).max() <= 1


def test_32bit_integer_and_float_tiffs(tmp_path):
    gray = gray_pattern()
    out = read_image(save(Image.fromarray(gray.astype(np.int32)), tmp_path / "i8.tif"))
    np.testing.assert_array_equal(out[..., 0], gray)  # 8-bit values in a 32-bit container
    v = values16()
    assert_16bit(read_image(save(Image.fromarray(v.astype(np.int32)), tmp_path / "i16.tif"))[..., 0], v)
    f = gray.astype(np.float32) / 255
    out = read_image(save(Image.fromarray(f), tmp_path / "f01.tif"))
    check_rgb(out)
    assert np.abs(out[..., 0].astype(int) - gray).max() <= 1  # [0, 1] floats: times 255
    f = gray.astype(np.float32) * 10 - 700  # no known range: stretched to 0-255
    out = read_image(save(Image.fromarray(f), tmp_path / "f.tif"))
    assert out.min() == 0 and out.max() == 255
