import numpy as np
import pytest
from PIL import Image

from anomaly.data.images import is_image_file, read_image, read_mask
from anomaly.errors import ImageReadError


@pytest.fixture
def gradient() -> np.ndarray:
    return np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))  # 8 x 16


@pytest.mark.parametrize("ext", ["png", "bmp", "tif", "jpg"])
def test_gray_formats(tmp_path, gradient, ext):
    path = tmp_path / f"g.{ext}"
    Image.fromarray(gradient).save(path)
    image = read_image(path, channels=1)
    assert image.shape == (8, 16, 1) and image.dtype == np.float32
    tolerance = 4 / 255 if ext == "jpg" else 1e-6
    assert np.abs(image[..., 0] - gradient / 255.0).max() <= tolerance


def test_sixteen_bit_png_keeps_precision(tmp_path):
    values = np.array([[0, 1, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    image = read_image(path, channels=1)[..., 0]
    assert image[0, 1] == pytest.approx(1 / 65535)  # lost in an 8-bit conversion
    assert image[0, 3] == pytest.approx(1.0)


def test_rgb_to_gray_uses_luma_and_gray_to_rgb_replicates(tmp_path):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 1] = 255  # pure green
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert read_image(tmp_path / "c.png", channels=1)[0, 0, 0] == pytest.approx(0.587, abs=1e-3)
    Image.fromarray(np.full((2, 2), 128, np.uint8)).save(tmp_path / "g.png")
    assert np.allclose(read_image(tmp_path / "g.png", channels=3), 128 / 255)


def test_rgba_and_palette(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 10
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png", channels=3)[0, 0].tolist() == [1.0, 0.0, 0.0]
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png", channels=1).shape == (4, 4, 1)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.fromarray(np.zeros((10, 20), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    image.save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg", channels=1).shape == (20, 10, 1)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (b"hello, not an image", "not a readable image")],
)
def test_unreadable_files_raise_with_the_path(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path, channels=1)
    assert info.value.path == str(path)


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_files(tmp_path, ext):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    path = tmp_path / f"t.{ext}"
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(path, channels=1)


def test_mask_is_boolean(tmp_path):
    Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").tolist() == [[False, True], [True, False]]


def test_extensions_are_case_insensitive():
    assert is_image_file("a.PNG") and is_image_file("b.JpEg") and not is_image_file("c.txt")


def test_in_memory_arrays_of_every_kind():
    from anomaly.data.images import array_to_image

    levels = np.array([[0, 51, 255]], dtype=np.uint8)
    expected = np.array([[0.0, 0.2, 1.0]])
    for array in (levels, levels.astype(np.float64), levels.astype(np.uint16) * 257,
                  levels / 255.0):
        out = array_to_image(array, channels=1)
        assert out.shape == (1, 3, 1) and np.allclose(out[..., 0], expected, atol=1e-6)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 1] = 255
    assert array_to_image(rgba, channels=1)[0, 0, 0] == pytest.approx(0.587, abs=1e-3)
    with pytest.raises(ValueError, match="must be"):
        array_to_image(np.zeros((2, 2, 5)), channels=1)
