"""Image decoding: every odd input becomes RGB uint8 (H, W, 3) of the right size and orientation."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from landmark_retrieval.io.images import iter_images, read_image, resize_max_side, scale_keypoints_back

H, W = 24, 40


def quadrants(h: int = H, w: int = W) -> np.ndarray:
    """RGB image with four flat quadrants of distinct colours (survives JPEG)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (220, 30, 30)
    img[: h // 2, w // 2:] = (30, 220, 30)
    img[h // 2:, : w // 2] = (30, 30, 220)
    img[h // 2:, w // 2:] = (230, 230, 40)
    return img


def quadrant_means(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    m = 3  # ignore pixels near the colour edges (JPEG ringing)
    q = [img[m:h // 2 - m, m:w // 2 - m], img[m:h // 2 - m, w // 2 + m:-m],
         img[h // 2 + m:-m, m:w // 2 - m], img[h // 2 + m:-m, w // 2 + m:-m]]
    return np.array([x.reshape(-1, 3).mean(0) for x in q])


def check_rgb(arr: np.ndarray, h: int = H, w: int = W) -> None:
    assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.shape == (h, w, 3)
    assert arr.flags["C_CONTIGUOUS"]


def test_rgb_png_roundtrip(tmp_path):
    src = quadrants()
    Image.fromarray(src).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    check_rgb(out)
    np.testing.assert_array_equal(out, src)


def test_grayscale_and_bilevel(tmp_path):
    gray = np.tile(np.arange(W, dtype=np.uint8) * 6, (H, 1))
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    check_rgb(out)
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))
    Image.fromarray(gray > 100).convert("1").save(tmp_path / "b.png")
    out = read_image(tmp_path / "b.png")
    check_rgb(out)
    assert set(np.unique(out)) <= {0, 255}


def test_rgba_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:, : W // 2, 3] = 255  # left opaque, right transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    check_rgb(out)
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert tuple(out[0, -1]) == (255, 255, 255)


def test_palette_with_and_without_transparency(tmp_path):
    src = quadrants()
    pal = Image.fromarray(src).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    check_rgb(out)
    np.testing.assert_allclose(quadrant_means(out), quadrant_means(src), atol=2)
    pal.info["transparency"] = pal.getpixel((0, 0))  # top-left colour transparent
    pal.save(tmp_path / "pt.png", transparency=pal.getpixel((0, 0)))
    out = read_image(tmp_path / "pt.png")
    check_rgb(out)
    assert tuple(out[0, 0]) == (255, 255, 255)
    np.testing.assert_allclose(out[-1, -1], src[-1, -1], atol=2)


def test_cmyk_jpeg(tmp_path):
    src = quadrants()
    Image.fromarray(src).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    out = read_image(tmp_path / "c.jpg")
    check_rgb(out)
    np.testing.assert_allclose(quadrant_means(out), quadrant_means(src), atol=12)


def test_16bit_png_gray_and_rgb(tmp_path):
    gray16 = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 60).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    check_rgb(out)
    np.testing.assert_allclose(out[..., 0], gray16 / 257.0, atol=1)
    cv2 = pytest.importorskip("cv2")
    rgb16 = np.zeros((H, W, 3), np.uint16)
    rgb16[...] = (65535, 30000, 1000)
    assert cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    out = read_image(tmp_path / "c16.png")
    check_rgb(out)
    np.testing.assert_allclose(out[0, 0], np.array([65535, 30000, 1000]) / 257.0, atol=1.5)


@pytest.mark.parametrize("orientation,transform", [
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),  # stored image is shown rotated 90 degrees clockwise
    (8, lambda a: np.rot90(a, 1)),
    (2, lambda a: a[:, ::-1]),
])
def test_exif_rotated_jpeg(tmp_path, orientation, transform):
    src = quadrants()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(src).save(tmp_path / "r.jpg", quality=95, exif=exif)
    out = read_image(tmp_path / "r.jpg")
    expected = np.ascontiguousarray(transform(src))
    check_rgb(out, *expected.shape[:2])
    np.testing.assert_allclose(quadrant_means(out), quadrant_means(expected), atol=12)


def test_truncated_jpeg_decodes(tmp_path):
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    Image.fromarray(src).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    out = read_image(tmp_path / "cut.jpg")
    check_rgb(out, 200, 300)


def test_unreadable_files_raise_and_iter_images_reports_them(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    Image.fromarray(quadrants()).save(tmp_path / "ok.png")
    with pytest.raises(IOError, match="bad.jpg"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.jpg")
    items = [("ok", tmp_path / "ok.png"), ("bad", tmp_path / "bad.jpg"), ("missing", tmp_path / "x.jpg")]
    results = list(iter_images(items, num_workers=2, prefetch=1))
    assert [r[0] for r in results] == ["ok", "bad", "missing"]
    check_rgb(results[0][1].array)
    assert results[1][1] is None and "Could not decode" in results[1][2]
    assert results[2][1] is None and "FileNotFoundError" in results[2][2]


def test_resize_max_side_and_keypoints_back():
    img = quadrants(400, 600)
    small, (sx, sy) = resize_max_side(img, 300)
    assert small.shape == (200, 300, 3) and (sx, sy) == (0.5, 0.5)
    same, factors = resize_max_side(img, 1000)
    assert same is img and factors == (1.0, 1.0)
    kp = np.array([[0.0, 0.0], [299.0, 199.0]], np.float32)
    np.testing.assert_allclose(scale_keypoints_back(kp, (sx, sy)), [[0.5, 0.5], [598.5, 398.5]])
