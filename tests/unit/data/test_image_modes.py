"""Every pixel mode Pillow hands over is read correctly or refused with a reason.

Each file is written with Pillow from a numpy array, and what the reader returns is
compared with a numpy computation from that same array (the colour formulas of the
standards, not Pillow's). A photo that cannot be judged (NaN or infinite pixels, several
pages, an unsupported type) must raise :class:`ImageReadError`, never become an array.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from anomaly.data.folder import list_files, list_images, scan_dataset
from anomaly.data.images import IMAGE_EXTENSIONS, array_to_image, read_image, read_native
from anomaly.errors import ImageReadError
from tests.conftest import write_png

_RNG = np.random.default_rng(7)
_U8 = _RNG.integers(0, 256, (6, 8), dtype=np.uint8)
_RGB = _RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)


def _reason(path, content: bytes | None = None) -> str:
    with pytest.raises(ImageReadError) as info:
        read_native(path, content=content)
    assert info.value.path == str(path)
    return info.value.reason


def _float_tiff(path, values: np.ndarray):
    assert values.dtype == np.float32
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode == "F"
    return path


# --- float TIFFs: NaN and infinity refused, other values clipped ------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_float_tiff_with_a_non_finite_pixel_is_refused(tmp_path, bad):
    values = _U8.astype(np.float32) / 255.0
    values[2, 3] = bad
    values[4, 0] = bad
    path = _float_tiff(tmp_path / "f.tif", values)
    reason = _reason(path)
    n_bad = int((~np.isfinite(values)).sum())
    assert reason.startswith(f"{n_bad} of {values.size} pixels are not finite (NaN or infinity)")
    assert "fix the camera/converter export" in reason
    with pytest.raises(ImageReadError, match="not finite"):
        read_image(path, channels=3)
    # The same bytes handed over in memory (Spark, the pyfunc model) are refused too.
    assert "not finite" in _reason("from-spark.tif", path.read_bytes())


def test_a_float_tiff_keeps_values_in_range_and_clips_the_rest(tmp_path):
    values = np.linspace(-0.5, 1.5, 48, dtype=np.float32).reshape(6, 8)
    image = read_native(_float_tiff(tmp_path / "f.tif", values))
    assert image.shape == (6, 8, 1) and image.dtype == np.float32
    np.testing.assert_array_equal(image[..., 0], np.clip(values, 0.0, 1.0))


def test_an_in_memory_array_with_nan_or_infinity_is_refused():
    for bad in (np.nan, np.inf, -np.inf):
        array = np.full((8, 8), 0.5)
        array[1, 1] = bad
        with pytest.raises(ValueError, match=r"1 of 64 values .* not finite"):
            array_to_image(array, channels=1)
    # Finite floats still read as before (the existing grey-level rule).
    out = array_to_image(np.array([[0.0, 51.0, 255.0]]), channels=1)
    np.testing.assert_allclose(out[0, :, 0], [0.0, 0.2, 1.0], atol=1e-6)


# --- integer modes ----------------------------------------------------------------------


def test_one_bit_png_is_black_and_white(tmp_path):
    bits = _U8 > 127
    Image.fromarray(bits).save(tmp_path / "b.png")
    with Image.open(tmp_path / "b.png") as check:
        assert check.mode == "1"
    image = read_native(tmp_path / "b.png")
    np.testing.assert_array_equal(image[..., 0], bits.astype(np.float32))


@pytest.mark.parametrize("ext", ["png", "tif", "bmp", "jpg"])
def test_gray_l(tmp_path, ext):
    Image.fromarray(_U8).save(tmp_path / f"l.{ext}", **({"quality": 100} if ext == "jpg" else {}))
    image = read_native(tmp_path / f"l.{ext}")
    tolerance = 3 / 255 if ext == "jpg" else 1e-7
    assert image.shape == (6, 8, 1)
    np.testing.assert_allclose(image[..., 0], _U8 / 255.0, atol=tolerance)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_gray_with_alpha_drops_the_alpha(tmp_path, ext):
    alpha = _RNG.integers(0, 256, _U8.shape, dtype=np.uint8)
    Image.fromarray(np.stack([_U8, alpha], axis=-1), mode="LA").save(tmp_path / f"la.{ext}")
    with Image.open(tmp_path / f"la.{ext}") as check:
        assert check.mode == "LA"
    np.testing.assert_allclose(read_native(tmp_path / f"la.{ext}")[..., 0], _U8 / 255.0)


def test_premultiplied_gray_alpha_tiff_is_un_premultiplied(tmp_path):
    # Pillow writes LA TIFFs with unassociated alpha (ExtraSamples = 2); the file is
    # patched to associated alpha (1), which Pillow decodes as mode "La".
    stored = np.array([[50, 30, 0, 255]], dtype=np.uint8)
    alpha = np.array([[102, 51, 255, 255]], dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([stored, alpha], axis=-1), mode="LA").save(buffer, format="TIFF")
    entry = (338).to_bytes(2, "little") + (3).to_bytes(2, "little") + (1).to_bytes(4, "little")
    data = buffer.getvalue()
    assert data.count(entry + (2).to_bytes(4, "little")) == 1
    path = tmp_path / "premultiplied.tif"
    path.write_bytes(
        data.replace(entry + (2).to_bytes(4, "little"), entry + (1).to_bytes(4, "little"))
    )
    with Image.open(path) as check:
        assert check.mode == "La"
    # The colour is the stored value divided by alpha: 50 / (102/255) = 125, 30 / 0.2 = 150.
    expected = np.array([[125, 150, 0, 255]]) / 255.0
    np.testing.assert_allclose(read_native(path)[..., 0], expected, atol=1e-6)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_sixteen_bit_i16(tmp_path, ext):
    values = _RNG.integers(0, 65536, (6, 8), dtype=np.uint16)
    values[0, :3] = [0, 1, 65535]
    Image.fromarray(values).save(tmp_path / f"d.{ext}")
    with Image.open(tmp_path / f"d.{ext}") as check:
        assert check.mode == "I;16"
    np.testing.assert_allclose(
        read_native(tmp_path / f"d.{ext}")[..., 0], values / 65535.0, atol=1e-7
    )


def test_sixteen_bit_big_endian_tiff(tmp_path):
    values = _RNG.integers(0, 65536, (6, 8), dtype=np.uint16)
    image = Image.frombytes("I;16B", (8, 6), values.astype(">u2").tobytes())
    image.save(tmp_path / "be.tif")
    with Image.open(tmp_path / "be.tif") as check:
        assert check.mode == "I;16B"
    np.testing.assert_allclose(
        read_native(tmp_path / "be.tif")[..., 0], values / 65535.0, atol=1e-7
    )


def test_thirty_two_bit_integers_within_sixteen_bits_are_read(tmp_path):
    values = _RNG.integers(0, 65536, (6, 8)).astype(np.int32)
    Image.fromarray(values).save(tmp_path / "i.tif")
    with Image.open(tmp_path / "i.tif") as check:
        assert check.mode == "I"
    np.testing.assert_allclose(read_native(tmp_path / "i.tif")[..., 0], values / 65535.0, atol=1e-7)


@pytest.mark.parametrize(("low", "high"), [(-5, 100), (0, 70000), (-1, 65536)])
def test_thirty_two_bit_integers_outside_sixteen_bits_are_refused(tmp_path, low, high):
    values = np.full((6, 8), 1000, dtype=np.int32)
    values[0, 0], values[5, 7] = low, high
    Image.fromarray(values).save(tmp_path / "i.tif")
    reason = _reason(tmp_path / "i.tif")
    assert f"from {min(low, 1000)} to {max(high, 1000)}" in reason
    assert "outside the 16-bit range" in reason


# --- palette and colour modes -----------------------------------------------------------


def _palette_image() -> tuple[Image.Image, np.ndarray, np.ndarray]:
    palette = _RNG.integers(0, 256, (16, 3), dtype=np.uint8)
    indices = _RNG.integers(0, 16, (6, 8), dtype=np.uint8)
    image = Image.frombytes("P", (8, 6), indices.tobytes())
    image.putpalette(palette.ravel().tolist())
    return image, indices, palette


# Only PNG stores a transparent palette entry.
@pytest.mark.parametrize(
    ("ext", "transparency"), [("png", False), ("png", True), ("tif", False), ("bmp", False)]
)
def test_palette_with_and_without_transparency(tmp_path, ext, transparency):
    image, indices, palette = _palette_image()
    path = tmp_path / f"p.{ext}"
    image.save(path, **({"transparency": 3} if transparency else {}))
    with Image.open(path) as check:
        assert check.mode == "P" and ("transparency" in check.info) == transparency
    # The palette's colours, whatever the transparency (alpha is dropped).
    np.testing.assert_allclose(read_native(path), palette[indices] / 255.0, atol=1e-7)


@pytest.mark.parametrize("ext", ["png", "tif", "bmp"])
def test_rgb(tmp_path, ext):
    Image.fromarray(_RGB).save(tmp_path / f"c.{ext}")
    np.testing.assert_allclose(read_native(tmp_path / f"c.{ext}"), _RGB / 255.0, atol=1e-7)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_rgba_drops_the_alpha(tmp_path, ext):
    alpha = _RNG.integers(0, 256, (6, 8, 1), dtype=np.uint8)
    Image.fromarray(np.concatenate([_RGB, alpha], axis=-1), mode="RGBA").save(tmp_path / f"a.{ext}")
    np.testing.assert_allclose(read_native(tmp_path / f"a.{ext}"), _RGB / 255.0, atol=1e-7)


def test_palette_with_alpha_tiff(tmp_path):
    image, indices, palette = _palette_image()
    image = image.convert("PA")
    image.save(tmp_path / "pa.tif")
    with Image.open(tmp_path / "pa.tif") as check:
        assert check.mode == "PA"
    np.testing.assert_allclose(
        read_native(tmp_path / "pa.tif"), palette[indices] / 255.0, atol=1e-7
    )


def test_cmyk_tiff(tmp_path):
    cmyk = _RNG.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    Image.frombytes("CMYK", (8, 6), cmyk.tobytes()).save(tmp_path / "k.tif")
    with Image.open(tmp_path / "k.tif") as check:
        assert check.mode == "CMYK"
    c = cmyk / 255.0
    expected = (1 - c[..., :3]) * (1 - c[..., 3:])  # the naive (profile-free) conversion
    np.testing.assert_allclose(read_native(tmp_path / "k.tif"), expected, atol=1.01 / 255)


def test_ycbcr_tiff(tmp_path):
    ycc = _RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.frombytes("YCbCr", (8, 6), ycc.tobytes()).save(tmp_path / "y.tif")
    with Image.open(tmp_path / "y.tif") as check:
        assert check.mode == "YCbCr"
    y, cb, cr = ycc[..., 0] * 1.0, ycc[..., 1] - 128.0, ycc[..., 2] - 128.0
    # JFIF (full range ITU-R BT.601).
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    expected = np.clip(rgb, 0, 255) / 255.0
    np.testing.assert_allclose(read_native(tmp_path / "y.tif"), expected, atol=1.51 / 255)


def test_cielab_tiff_neutral_greys(tmp_path):
    lightness = np.linspace(0, 255, 8).round().astype(np.uint8)
    lab = np.zeros((1, 8, 3), np.uint8)  # a* = b* = 0 (signed bytes): neutral grey
    lab[..., 0] = lightness
    Image.frombytes("LAB", (8, 1), lab.tobytes()).save(tmp_path / "lab.tif")
    with Image.open(tmp_path / "lab.tif") as check:
        assert check.mode == "LAB"
    big_l = lightness * 100.0 / 255.0
    luminance = np.where(big_l > 8, ((big_l + 16) / 116) ** 3, big_l / 903.3)
    srgb = np.where(
        luminance <= 0.0031308, 12.92 * luminance, 1.055 * luminance ** (1 / 2.4) - 0.055
    )
    image = read_native(tmp_path / "lab.tif")
    assert image.shape == (1, 8, 3)
    for channel in range(3):
        np.testing.assert_allclose(image[0, :, channel], srgb, atol=2.01 / 255)


# --- several frames ---------------------------------------------------------------------


def test_a_multi_page_tiff_is_refused(tmp_path):
    pages = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (10, 20, 30)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    reason = _reason(tmp_path / "pages.tif")
    assert reason.startswith("has 3 frames/pages")
    assert "save the page you want as its own file" in reason


def test_an_animated_png_is_refused(tmp_path):
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    assert _reason(tmp_path / "anim.png").startswith("has 2 frames/pages")


def test_a_multi_picture_jpeg_gives_its_first_picture(tmp_path):
    ramp = np.linspace(40, 220, 32).round().astype(np.uint8)
    photo = Image.fromarray(np.broadcast_to(ramp[None, :, None], (24, 32, 3)).copy())
    preview = Image.fromarray(np.zeros((6, 8, 3), np.uint8))
    photo.save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[preview],
               quality=100)  # fmt: skip
    with Image.open(tmp_path / "camera.jpg") as check:
        assert check.format == "MPO" and check.n_frames == 2
    image = read_native(tmp_path / "camera.jpg")
    assert image.shape == (24, 32, 3)
    # The photo (a smooth ramp, so JPEG keeps it within a few levels), not the black preview.
    np.testing.assert_allclose(image, np.asarray(photo) / 255.0, atol=4 / 255)


# --- unsupported types ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["anim.gif", "photo.webp", "notes.txt", "photo.heic", "README"])
def test_files_of_an_unsupported_type_are_refused_with_what_to_do(tmp_path, name):
    path = tmp_path / name
    if name.endswith((".gif", ".webp")):
        Image.fromarray(_RGB).save(path)
    else:
        path.write_bytes(b"some bytes")
    reason = _reason(path)
    suffix = path.suffix.lower()
    assert reason.startswith(
        f"unsupported file type {f'{suffix!r}' if suffix else '(no extension)'}"
    )
    assert ", ".join(sorted(IMAGE_EXTENSIONS)) in reason and "convert it to PNG or TIFF" in reason


def test_content_of_another_format_is_refused_whatever_its_name(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(_RGB).save(buffer, format="GIF")
    (tmp_path / "renamed.png").write_bytes(buffer.getvalue())
    assert _reason(tmp_path / "renamed.png").startswith(
        "unsupported file type: the content is a GIF image"
    )
    buffer = io.BytesIO()
    Image.fromarray(_RGB).save(buffer, format="WEBP")
    assert "content is a WEBP image" in _reason("<bytes>", buffer.getvalue())


# --- listing ----------------------------------------------------------------------------


def test_listing_splits_images_from_other_files_and_skips_hidden_ones(tmp_path):
    for name in ("a.png", "sub/b.TIF", "c.gif", "sub/d.txt", "e", ".hidden.gif", ".cache/f.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    images, others = list_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in images] == ["a.png", "sub/b.TIF"]
    assert [p.relative_to(tmp_path).as_posix() for p in others] == ["c.gif", "e", "sub/d.txt"]
    assert list_images(tmp_path) == images


def test_training_data_warns_once_about_ignored_files(tmp_path, caplog):
    for i in range(3):
        write_png(tmp_path / "train" / "good" / f"{i}.png", _U8)
    write_png(tmp_path / "test" / "good" / "0.png", _U8)
    for name in ("train/good/x.gif", "train/good/notes.txt", "test/good/y.webp", "test/good/z.bak"):
        (tmp_path / name).write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="anomaly.data.folder"):
        splits = scan_dataset(tmp_path)
    assert len(splits.train) == 3 and len(splits.test) == 1
    (warning,) = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert (
        "ignored 4 file(s), e.g. test/good/y.webp, test/good/z.bak, train/good/notes.txt" in warning
    )
