"""Every image format the package reads (issue #21, "Formats"), generated in tmp_path.

The pattern of ``_image_samples`` is written in each format and read back: exactly for lossless
formats, within a tolerance for JPEG/WebP/GIF. Also: EXIF orientations 1-8 (JPEG, PNG, WebP,
TIFF), greyscale, palette, alpha, CMYK, first page/frame of multi-page files, HEIC/HEIF without
pillow-heif, the folder listing's suffixes, damaged files, and real photographs re-encoded in
every format. 16-bit samples: ``test_image_depths.py``.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from _image_samples import (
    MARK,
    MARKER_CORNER,
    H,
    W,
    as_displayed,
    check_rgb,
    gray_pattern,
    marker_corners,
    mean_abs,
    pattern,
    save,
    write_png16,
    write_pnm,
    write_tiff16,
)
from PIL import Image

from landmark_retrieval.io import images as images_module
from landmark_retrieval.io.images import IMAGE_SUFFIXES, decode_image, is_image_file, read_image

# ---------------------------------------------------------------------------------------------
# RGB round trips in every format
# ---------------------------------------------------------------------------------------------
LOSSLESS = {
    "png": ("a.png", {}),
    "png upper-case suffix": ("a.PNG", {"format": "PNG"}),
    "webp lossless": ("a.webp", {"lossless": True}),
    "tiff raw": ("a.tif", {}),
    "tiff lzw": ("a.tiff", {"compression": "tiff_lzw"}),
    "tiff deflate": ("a.tif", {"compression": "tiff_adobe_deflate"}),
    "tiff packbits": ("a.tif", {"compression": "packbits"}),
    "bmp": ("a.bmp", {}),
    "ppm (P6)": ("a.ppm", {}),
    "pnm": ("a.pnm", {"format": "PPM"}),
}
LOSSY = {"jpeg q95": ("a.jpg", {"quality": 95}), "jpeg q80": ("a.jpeg", {"quality": 80}),
         "webp q95": ("a.webp", {"quality": 95})}


@pytest.mark.parametrize("name", list(LOSSLESS))
def test_lossless_formats_read_exactly(tmp_path, name):
    filename, kwargs = LOSSLESS[name]
    src = pattern()
    out = read_image(save(Image.fromarray(src), tmp_path / filename, **kwargs))
    check_rgb(out)
    np.testing.assert_array_equal(out, src)


@pytest.mark.parametrize("name", list(LOSSY))
def test_lossy_formats_read_within_tolerance(tmp_path, name):
    filename, kwargs = LOSSY[name]
    src = pattern()
    out = read_image(save(Image.fromarray(src), tmp_path / filename, **kwargs))
    check_rgb(out)
    assert mean_abs(out, src) < 3
    assert marker_corners(out) == ["tl"]
    assert mean_abs(out[H // 2, W - MARK], src[H // 2, W - MARK]) < 30  # RGB order, not BGR


def test_handwritten_ppm_and_pgm_with_comments(tmp_path):
    src = pattern()
    np.testing.assert_array_equal(read_image(write_pnm(tmp_path / "a.ppm", src)), src)
    gray = gray_pattern()
    out = read_image(write_pnm(tmp_path / "a.pgm", gray))
    check_rgb(out)
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))


@pytest.mark.parametrize("filename,kwargs", [
    ("g.png", {}), ("g.pgm", {}), ("g.tif", {}), ("g.bmp", {}), ("g.gif", {}), ("g.webp", {"lossless": True}),
])
def test_greyscale_files_become_three_equal_channels(tmp_path, filename, kwargs):
    gray = gray_pattern()
    out = read_image(save(Image.fromarray(gray, "L"), tmp_path / filename, **kwargs))
    check_rgb(out)
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))


def test_greyscale_jpeg_and_opaque_la_png(tmp_path):
    gray = gray_pattern()
    out = read_image(save(Image.fromarray(gray, "L"), tmp_path / "g.jpg", quality=95))
    check_rgb(out)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert mean_abs(out[..., 0], gray) < 2
    la = np.stack([gray, np.full_like(gray, 255)], axis=-1)
    out = read_image(save(Image.fromarray(la, "LA"), tmp_path / "la.png"))
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))


@pytest.mark.parametrize("filename", ["p.png", "p.gif", "p.bmp", "p.tif"])
def test_palette_files_read_their_palette_colours(tmp_path, filename):
    pal = Image.fromarray(pattern()).quantize(colors=64)
    expected = np.asarray(pal.convert("RGB"))
    out = read_image(save(pal, tmp_path / filename))
    check_rgb(out)
    np.testing.assert_array_equal(out, expected)


def test_gif_transparency_is_white(tmp_path):
    pal = Image.fromarray(pattern()).quantize(colors=64)
    index = pal.getpixel((W - 1, H - 1))
    out = read_image(save(pal, tmp_path / "t.gif", transparency=index))
    assert tuple(out[-1, -1]) == (255, 255, 255)
    np.testing.assert_array_equal(out[:MARK, :MARK], 255)


def test_multi_page_tiff_and_animations_read_their_first_page(tmp_path):
    src = pattern()
    first = Image.fromarray(src)
    others = [Image.new("RGB", (W, H), (0, 200, 0)), Image.new("RGB", (W // 2, H // 2), (9, 9, 9))]
    for filename, kwargs in [("m.tif", {}), ("m.webp", {"lossless": True}), ("m.gif", {})]:
        pages = others if filename.endswith(".tif") else others[:1]  # animations: frames of one size
        path = save(first, tmp_path / filename, save_all=True, append_images=pages, **kwargs)
        with Image.open(path) as img:
            assert getattr(img, "n_frames", 1) >= 2, filename
        out = read_image(path)
        check_rgb(out)
        if filename.endswith(".gif"):  # GIF: 256 colours
            assert mean_abs(out, src) < 12 and marker_corners(out) == ["tl"]
        else:
            np.testing.assert_array_equal(out, src)


@pytest.mark.parametrize("filename,kwargs", [("a.png", {}), ("a.webp", {"lossless": True}), ("a.tif", {})])
def test_alpha_is_composited_on_white(tmp_path, filename, kwargs):
    src = pattern()
    alpha = np.zeros((H, W), np.uint8)
    alpha[:, : W // 3] = 255      # opaque
    alpha[:, W // 3: 2 * W // 3] = 128  # half
    out = read_image(save(Image.fromarray(np.dstack([src, alpha]), "RGBA"), tmp_path / filename, **kwargs))
    check_rgb(out)
    a = alpha[..., None].astype(np.float64) / 255
    expected = src * a + 255 * (1 - a)
    assert np.abs(out - expected).max() <= 1
    np.testing.assert_array_equal(out[:, 2 * W // 3:], 255)


def test_la_alpha_is_composited_on_white(tmp_path):
    gray = gray_pattern()
    alpha = np.where(np.arange(W) < W // 2, 255, 0).astype(np.uint8)[None].repeat(H, 0)
    out = read_image(save(Image.fromarray(np.dstack([gray, alpha]), "LA"), tmp_path / "la.png"))
    check_rgb(out)
    np.testing.assert_array_equal(out[:, : W // 2, 0], gray[:, : W // 2])
    np.testing.assert_array_equal(out[:, W // 2:], 255)


def test_cmyk_tiff_and_jpeg(tmp_path):
    src = pattern()
    cmyk = Image.fromarray(src).convert("CMYK")
    np.testing.assert_array_equal(read_image(save(cmyk, tmp_path / "c.tif")), src)
    out = read_image(save(cmyk, tmp_path / "c.jpg", quality=95))
    check_rgb(out)
    assert mean_abs(out, src) < 4 and marker_corners(out) == ["tl"]


# ---------------------------------------------------------------------------------------------
# EXIF orientation: the returned pixels are as displayed
# ---------------------------------------------------------------------------------------------
EXIF_FORMATS = {"jpg": {"quality": 95}, "png": {}, "webp": {"lossless": True}, "tif": {}}


@pytest.mark.parametrize("ext", list(EXIF_FORMATS))
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(tmp_path, ext, orientation):
    src = pattern()
    img = Image.fromarray(src)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = save(img, tmp_path / f"o{orientation}.{ext}", exif=exif.tobytes(), **EXIF_FORMATS[ext])
    expected = as_displayed(src, orientation)
    h, w = expected.shape[:2]

    full = decode_image(path)
    check_rgb(full.array, h, w)
    assert full.original_size == (w, h) and full.factors == (1.0, 1.0)
    assert marker_corners(full.array) == [MARKER_CORNER[orientation]]
    if ext == "jpg":
        assert mean_abs(full.array, expected) < 3
    else:
        np.testing.assert_array_equal(full.array, expected)

    reduced = decode_image(path, max_pixels=H * W // 4)  # the bounded-memory path: half size
    assert reduced.original_size == (w, h)
    rh, rw = reduced.array.shape[:2]
    assert rh * rw <= H * W // 4 and abs(rw / rh - w / h) < 0.1
    assert marker_corners(reduced.array, MARK // 2) == [MARKER_CORNER[orientation]]
    ref = np.asarray(Image.fromarray(expected).resize((rw, rh), Image.BILINEAR))
    assert mean_abs(reduced.array, ref) < 6


@pytest.mark.parametrize("orientation", [3, 6, 7])
def test_exif_orientation_of_a_16bit_tiff(tmp_path, orientation):
    src16 = pattern().astype(np.uint16) * 257
    path = write_tiff16(tmp_path / "o.tif", src16, orientation=orientation)
    expected = as_displayed(pattern(), orientation)
    full = decode_image(path)
    np.testing.assert_array_equal(full.array, expected)
    assert full.original_size == expected.shape[1::-1]
    reduced = decode_image(path, max_pixels=H * W // 4)
    assert reduced.original_size == expected.shape[1::-1]
    assert marker_corners(reduced.array, MARK // 2) == [MARKER_CORNER[orientation]]

# ---------------------------------------------------------------------------------------------
# HEIC/HEIF: through pillow-heif when installed, else a one-line error naming it
# ---------------------------------------------------------------------------------------------
FAKE_HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)


@pytest.fixture
def without_pillow_heif(monkeypatch):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import fails
    monkeypatch.setattr(images_module, "_heif_registered", None)


@pytest.mark.parametrize("filename", ["a.heic", "b.HEIF", "renamed_heic.jpg"])
def test_heic_without_pillow_heif_names_the_package(tmp_path, without_pillow_heif, filename):
    path = tmp_path / filename
    path.write_bytes(FAKE_HEIC)
    with pytest.raises(IOError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message and "pip install pillow-heif" in message and "\n" not in message


def test_garbage_is_not_mistaken_for_heic(tmp_path, without_pillow_heif):
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all" * 4)
    with pytest.raises(IOError, match="Could not decode image") as info:
        read_image(tmp_path / "bad.jpg")
    assert "pillow-heif" not in str(info.value)


def test_pillow_heif_opener_is_registered_once_when_installed(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("pillow_heif")
    fake.register_heif_opener = lambda: calls.append(1)  # registers nothing: the file stays unreadable
    monkeypatch.setitem(sys.modules, "pillow_heif", fake)
    monkeypatch.setattr(images_module, "_heif_registered", None)
    for name in ("a.heic", "b.heic", "c.jpg"):
        (tmp_path / name).write_bytes(FAKE_HEIC)
        with pytest.raises(IOError, match="Could not decode image") as info:
            read_image(tmp_path / name)
        assert "pip install" not in str(info.value)  # installed: not claimed missing
    assert calls == [1]


def test_heic_round_trip_with_pillow_heif(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    src = pattern()
    try:
        Image.fromarray(src).save(tmp_path / "a.heic", quality=95)
    except Exception as exc:  # a build without an HEVC encoder
        pytest.skip(f"pillow-heif cannot encode HEIC here: {exc}")
    out = read_image(tmp_path / "a.heic")
    check_rgb(out)
    assert mean_abs(out, src) < 4 and marker_corners(out) == ["tl"]


# ---------------------------------------------------------------------------------------------
# Folder listings: which file names are images
# ---------------------------------------------------------------------------------------------
SUFFIXES = [".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".ppm", ".pgm", ".pnm", ".gif",
            ".heic", ".heif"]


def test_image_suffixes_are_exactly_the_supported_formats():
    assert IMAGE_SUFFIXES == frozenset(SUFFIXES)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_is_image_file_in_any_case(suffix):
    for name in (f"a{suffix}", f"a{suffix.upper()}", f"a{suffix[:2].upper()}{suffix[2:]}", f"dir/x.y{suffix}"):
        assert is_image_file(name), name
    assert is_image_file(Path("some") / f"IMG_0001{suffix.upper()}")


@pytest.mark.parametrize("name", [
    "notes.txt", "a.jpg.txt", "README", "a.svg", "a.jfif", "a.raw", "a.avif", "a.jpg~", "a.png.part",
    "._IMG_0001.jpg", ".DS_Store", ".hidden.png", ".jpg", "dir/._a.JPG",
])
def test_is_image_file_rejects_other_and_hidden_files(name):
    assert not is_image_file(name)


def test_dataset_listing_uses_is_image_file(tmp_path):
    from landmark_retrieval.io.dataset import find_images

    names = [f"i{i}{s}" for i, s in enumerate(SUFFIXES)] + ["u.JPG", "v.Tiff"]
    for name in names + ["notes.txt", "._i0.jpg"]:
        (tmp_path / name).write_bytes(b"")
    assert sorted(p.name for p in find_images(tmp_path).values()) == sorted(names)


# ---------------------------------------------------------------------------------------------
# Damaged files: the existing error (IOError naming the file), or decoded with a warning
# ---------------------------------------------------------------------------------------------
DAMAGE_FORMATS = {"a.jpg": {"quality": 90}, "a.png": {}, "a.webp": {}, "a.tif": {}, "a.bmp": {}, "a.ppm": {},
                  "a.pgm": {}, "a.gif": {}}


@pytest.mark.parametrize("filename", list(DAMAGE_FORMATS))
def test_corrupt_and_truncated_files(tmp_path, filename):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    if filename.endswith(".pgm"):
        img = img.convert("L")
    full = save(img, tmp_path / filename, **DAMAGE_FORMATS[filename]).read_bytes()

    garbage = tmp_path / f"garbage_{filename}"
    garbage.write_bytes(b"\x00garbage, not an image" * 8)
    empty = tmp_path / f"empty_{filename}"
    empty.write_bytes(b"")
    for path in (garbage, empty):
        with pytest.raises(IOError, match="Could not decode image") as info:
            read_image(path)
        assert str(path) in str(info.value)

    for cut in (16, len(full) // 2, len(full) - 1):  # header only, half, all but the last byte
        path = tmp_path / f"cut{cut}_{filename}"
        path.write_bytes(full[:cut])
        try:
            decoded = decode_image(path)
        except IOError as exc:  # nothing else: a bad file must never stop a run with another error
            assert type(exc) is OSError and str(path) in str(exc) and "Could not decode image" in str(exc)
        else:
            check_rgb(decoded.array)
            assert decoded.warning is None or "decoded with errors" in decoded.warning


# ---------------------------------------------------------------------------------------------
# Real photographs (../shared/data), re-encoded in every format
# ---------------------------------------------------------------------------------------------
REAL_LOSSLESS = [("png", {}), ("webp", {"lossless": True}), ("tif", {"compression": "tiff_lzw"}), ("bmp", {}),
                 ("ppm", {})]
REAL_LOSSY = [("jpg", {"quality": 95}, 2.5), ("webp", {"quality": 95}, 3.0), ("gif", {}, 12.0)]


@pytest.mark.parametrize("relpath", ["lightglue_assets/sacre_coeur1.jpg", "oxford_affine/boat/img1.png"])
def test_real_photo_reencoded_in_every_format(shared_data, tmp_path, relpath):
    if not (shared_data / relpath).is_file():
        pytest.skip(f"{relpath} not in {shared_data}")
    ref = read_image(shared_data / relpath)
    h, w = ref.shape[:2]
    img = Image.fromarray(ref)
    for ext, kwargs in REAL_LOSSLESS:
        out = read_image(save(img, tmp_path / f"r.{ext}", **kwargs))
        np.testing.assert_array_equal(out, ref, err_msg=ext)
    for ext, kwargs, tolerance in REAL_LOSSY:
        out = read_image(save(img, tmp_path / f"lossy.{ext}", **kwargs))
        check_rgb(out, h, w)
        assert mean_abs(out, ref) < tolerance, ext
    v = ref.astype(np.uint16) * 257  # the same photo in 16 bits: exactly the 8-bit pixels again
    for path in (write_png16(tmp_path / "r16.png", v), write_tiff16(tmp_path / "r16.tif", v),
                 write_pnm(tmp_path / "r16.ppm", v, 65535)):
        np.testing.assert_array_equal(read_image(path), ref, err_msg=path.name)
    exif = img.getexif()
    exif[0x0112] = 6
    out = read_image(save(img, tmp_path / "rot.jpg", quality=95, exif=exif.tobytes()))
    check_rgb(out, w, h)
    assert mean_abs(out, np.rot90(ref, -1)) < 2.5
