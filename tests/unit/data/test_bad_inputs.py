"""Every kind of messy input a factory folder holds, and what each one produces."""

from __future__ import annotations

import os
import signal
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from anomaly.data.dataset import ImageDataset, check_images, collate, load_checked
from anomaly.data.folder import Sample, list_images, scan_dataset, split_validation
from anomaly.data.images import read_image, read_mask, read_native
from anomaly.data.transforms import Preprocess
from anomaly.errors import AnomalyError, DataError, ImageReadError
from tests.conftest import write_png


def _noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _unreadable_reason(path) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path, channels=1)
    assert info.value.path == str(path)
    return info.value.reason


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").touch()
    assert "empty (0 bytes)" in _unreadable_reason(tmp_path / "empty.png")


@pytest.mark.parametrize("ext", ["png", "jpg", "tif"])
def test_truncated_image(tmp_path, ext):
    path = tmp_path / f"half.{ext}"
    Image.fromarray(_noise((64, 64))).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated" in _unreadable_reason(path)


def test_text_and_video_with_an_image_extension(tmp_path):
    (tmp_path / "notes.png").write_text("inspection notes, not a picture\n")
    # The start of an MP4 file (ftyp box) saved as .jpg by a camera tool.
    (tmp_path / "clip.jpg").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(2000))
    for name in ("notes.png", "clip.jpg"):
        assert "not a readable image" in _unreadable_reason(tmp_path / name)


def test_upper_case_and_odd_extensions_are_listed(tmp_path):
    for name in ("a.PNG", "b.JPEG", "c.Tif", "d.tiff", "e.bmp", "f.jpg.bak", "g.txt", "h"):
        (tmp_path / name).write_bytes(b"x")
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["a.PNG", "b.JPEG", "c.Tif", "d.tiff", "e.bmp"]


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_sixteen_bit_files_keep_precision(tmp_path, ext):
    values = np.array([[0, 1, 256, 65535]], dtype=np.uint16)
    path = tmp_path / f"deep.{ext}"
    Image.fromarray(values).save(path)
    image = read_image(path, channels=1)[0, :, 0]
    assert np.allclose(image, values[0] / 65535.0, atol=1e-7)


def test_rgba_palette_cmyk_and_exif(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 2] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png", channels=3)[0, 0].tolist() == [0.0, 0.0, 1.0]

    Image.fromarray(np.full((8, 8, 3), 102, np.uint8)).convert("P").save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png", channels=1)[0, 0, 0] == pytest.approx(102 / 255)

    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).convert("CMYK").save(
        tmp_path / "cmyk.jpg", quality=100
    )
    cmyk = read_image(tmp_path / "cmyk.jpg", channels=3)
    assert cmyk.shape == (8, 8, 3) and np.allclose(cmyk, 200 / 255, atol=0.03)

    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 270 degrees on display
    Image.fromarray(np.zeros((10, 30), np.uint8)).save(tmp_path / "rot.jpg", exif=exif)
    assert read_image(tmp_path / "rot.jpg", channels=1).shape == (30, 10, 1)


def test_one_pixel_image_is_refused_as_a_thumbnail(tmp_path):
    write_png(tmp_path / "dot.png", np.array([[128]], np.uint8))
    assert read_image(tmp_path / "dot.png", channels=1).shape == (1, 1, 1)  # decodable...
    with pytest.raises(ImageReadError, match=r"1x1 pixels, below the 8-pixel minimum"):
        load_checked(tmp_path / "dot.png", channels=1)  # ...but not inspected


def test_decompression_bomb_is_refused(tmp_path):
    side = int(np.sqrt(Image.MAX_IMAGE_PIXELS)) + 100
    Image.new("1", (side, side)).save(tmp_path / "bomb.png")  # compresses to a few KB
    assert (tmp_path / "bomb.png").stat().st_size < 2_000_000
    assert "too large to decode safely" in _unreadable_reason(tmp_path / "bomb.png")


def test_non_ascii_and_spaces_in_paths(tmp_path):
    folder = tmp_path / "Prüfung Linie 3" / "Kamera ü"
    path = write_png(folder / "Teil Nr. 7 – gut.png", _noise((16, 16)))
    assert list_images(tmp_path) == [path]
    assert read_image(path, channels=1).shape == (16, 16, 1)


def test_symlinks_and_hidden_files(tmp_path):
    real = write_png(tmp_path / "store" / "a.png", _noise((16, 16)))
    folder = tmp_path / "inbox"
    folder.mkdir()
    os.symlink(real, folder / "link.png")
    os.symlink(tmp_path / "gone.png", folder / "broken.png")
    os.symlink(folder, folder / "loop")  # a folder link cycle must not hang the listing
    write_png(folder / ".hidden.png", _noise((16, 16)))
    write_png(folder / ".thumbs" / "t.png", _noise((16, 16)))
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    assert [p.name for p in list_images(folder)] == ["broken.png", "link.png"]
    assert read_image(folder / "link.png", channels=1).shape == (16, 16, 1)
    assert "broken symbolic link" in _unreadable_reason(folder / "broken.png")


def test_empty_folder(tmp_path):
    assert list_images(tmp_path) == []
    with pytest.raises(DataError, match="no training images"):
        scan_dataset(tmp_path)


def test_too_few_training_images_for_the_validation_split(tmp_path):
    write_png(tmp_path / "only.png", _noise((16, 16)))
    with pytest.raises(DataError, match="at least 2 are needed"):
        split_validation(scan_dataset(tmp_path).train, fraction=0.1, seed=0)


def test_unreadable_training_images_are_set_aside(tmp_path):
    good = [write_png(tmp_path / f"{i}.png", _noise((16, 16), i)) for i in range(3)]
    (tmp_path / "bad.png").write_bytes(b"")
    samples = [Sample(p, 0, "good") for p in sorted(tmp_path.iterdir())]
    readable, bad = check_images(samples, channels=1)
    assert [s.path for s in readable] == good
    assert bad == [(tmp_path / "bad.png", "file is empty (0 bytes); was it copied completely?")]


def _mask_item(tmp_path, mask: np.ndarray | None, *, image_size: int = 16):
    image = write_png(tmp_path / "test" / "scratch" / "001.png", _noise((16, 16)))
    mask_path = None
    if mask is not None:
        mask_path = write_png(tmp_path / "ground_truth" / "scratch" / "001_mask.png", mask)
    dataset = ImageDataset(
        [Sample(image, 1, "scratch", mask_path)],
        Preprocess.create(image_size=image_size, channels=1),
        with_masks=True,
        skip_errors=True,
    )
    return collate([dataset[0]])


def test_mask_whose_size_differs_from_its_image(tmp_path):
    batch = _mask_item(tmp_path, np.zeros((8, 12), np.uint8))
    # The image is still scored; only its pixels are left out.
    assert not batch["errors"] and batch["index"] == [0]
    assert batch["has_mask"].tolist() == [False]
    ((_, reason),) = batch["mask_errors"]
    assert "mask is 12x8 pixels but its image 001.png is 16x16" in reason


def test_missing_mask_leaves_the_image_out_of_pixel_metrics(tmp_path):
    batch = _mask_item(tmp_path, None)
    assert batch["has_mask"].tolist() == [False] and not batch["errors"]


def test_non_binary_mask_is_binarised_at_half_range(tmp_path):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 200  # anti-aliased or JPEG-compressed masks have grey levels
    mask[8:10, 8:10] = 100
    write_png(tmp_path / "m.png", mask)
    read = read_mask(tmp_path / "m.png")
    assert read.dtype == bool and read.sum() == 16 and read[5, 5] and not read[9, 9]


def test_channel_mode_mismatch_is_converted_with_a_note(tmp_path):
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[..., 0] = 255
    write_png(tmp_path / "red.png", colour)
    write_png(tmp_path / "grey_as_rgb.png", np.repeat(_noise((16, 16, 1)), 3, axis=2))
    write_png(tmp_path / "grey.png", _noise((16, 16)))
    image, note = load_checked(tmp_path / "red.png", channels=1)
    assert image.shape == (16, 16, 1) and "colour image converted to gray" in note
    # A gray scene saved as RGB (cameras do that) is not a mismatch.
    assert load_checked(tmp_path / "grey_as_rgb.png", channels=1)[1] == ""
    image, note = load_checked(tmp_path / "grey.png", channels=3)
    assert image.shape == (16, 16, 3) and "gray image replicated to RGB" in note


# Valid files of several formats, to mutate.
def _seed_files() -> list[bytes]:
    import io

    seeds = []
    for fmt, mode in (("PNG", "L"), ("JPEG", "RGB"), ("BMP", "RGB"), ("TIFF", "L"), ("GIF", "P")):
        buffer = io.BytesIO()
        array = _noise((12, 10, 3)) if mode == "RGB" else _noise((12, 10))
        Image.fromarray(array).convert(mode).save(buffer, format=fmt)
        seeds.append(buffer.getvalue())
    return seeds


SEEDS = _seed_files()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        else:
            data = data[:pos]
    return bytes(data)


# No hypothesis deadline: a loaded CI machine is slow, not wrong; the SIGALRM guard below
# catches a decoder that really hangs. Pillow warns about the corrupt metadata it skips.
@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.one_of(mutated_images(), st.binary(max_size=512)),
    ext=st.sampled_from(["png", "jpg", "bmp", "tif", "gif.png"]),
)
def test_fuzzed_bytes_load_or_raise_the_package_error(tmp_path, content, ext):
    path = tmp_path / f"fuzz.{ext}"
    path.write_bytes(content)

    def hung(signum, frame):
        raise TimeoutError(f"decoding {len(content)} fuzzed bytes took over 5 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        image = read_native(path)
    except AnomalyError as exc:
        assert isinstance(exc, ImageReadError) and exc.path == str(path)
        assert exc.reason and set(exc.reason) <= set(string.printable + "–×")
    else:
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[-1] in (1, 3)
        assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
