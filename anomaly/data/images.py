"""Reading image and mask files: the one place where files become arrays.

Every supported file (PNG, JPEG, BMP, TIFF; 8- or 16-bit; gray, RGB, RGBA, palette, CMYK;
EXIF-rotated) becomes a float32 array in ``[0, 1]`` of shape ``(H, W, C)`` with the number
of channels the model expects. Anything that is not a readable image raises
:class:`~anomaly.errors.ImageReadError` naming the file and saying why, so that a photo
that cannot be judged is listed as such and never passed as good.

What each file becomes, by the pixel mode Pillow decodes it to:

* ``1``, ``L``, ``LA``, ``La``: gray (alpha dropped; premultiplied ``La`` un-premultiplied
  first). ``P``, ``PA`` (with or without transparency), ``RGB``, ``RGBA``, ``RGBX``,
  ``RGBa``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: RGB through Pillow's conversions (alpha
  dropped, palette expanded).
* ``I;16``, ``I;16B`` (16-bit files): scaled by 65535 at full precision. ``I`` (32-bit
  integers; Pillow's mode for some 16-bit and signed TIFFs): the same when every value
  lies in 0-65535, refused otherwise, since clipping would flatten whatever lies outside.
* ``F`` (32-bit float TIFFs): taken as ``[0, 1]``, values outside clipped; refused when
  any pixel is NaN or infinite, because no score computed from it can be trusted.
* A file of several frames or pages (multi-page TIFF, animated PNG) is refused: the
  inspection judges single photos and picking one page could judge the wrong picture.
  The exception is a multi-picture JPEG (MPO, as some cameras write): its first picture
  is by definition the photo, the rest are previews.
* A file on disk whose extension is not in :data:`IMAGE_EXTENSIONS`, and any content that
  decodes to another format (GIF, WebP, ...), is refused as an unsupported file type.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from anomaly.errors import ImageReadError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
# What the content may decode as, whatever the file is named. MPO is how Pillow opens a
# JPEG that carries extra pictures (previews) after the photo.
_FORMATS = frozenset({"PNG", "JPEG", "MPO", "BMP", "TIFF"})
_CONVERT = "convert it to PNG or TIFF"

# ITU-R 601-2 luma, the same weights Pillow uses for its "L" conversion.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Return True when ``path`` has a supported image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def unsupported_type_reason(path: str | os.PathLike[str]) -> str:
    """Why a file with an unsupported extension is not read, and what to do about it."""
    suffix = Path(path).suffix.lower()
    kind = f"'{suffix}'" if suffix else "(no extension)"
    return (
        f"unsupported file type {kind} (supported: {', '.join(sorted(IMAGE_EXTENSIONS))}); "
        f"{_CONVERT}"
    )


def read_image(
    path: str | os.PathLike[str], *, channels: int, content: bytes | None = None
) -> np.ndarray:
    """Read an image file into a float array.

    Args:
        path: Image file.
        channels: 1 (gray; colour is converted with ITU-R 601 luma weights) or 3 (RGB; gray
            is replicated). Alpha is dropped.
        content: The file's bytes when already read; ``path`` then only names it.

    Returns:
        Array of shape ``(H, W, channels)``, dtype float32, values in ``[0, 1]``. 16-bit
        files keep their full precision.

    Raises:
        ImageReadError: The file is empty, truncated, not an image, too large, of an
            unsupported type, of several frames, or holds pixels that cannot be judged
            (NaN or infinite floats, integers outside 16 bits); see the module docstring.
        ValueError: ``channels`` is not 1 or 3.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    return match_channels(read_native(path, content=content), channels)


def read_native(path: str | os.PathLike[str], *, content: bytes | None = None) -> np.ndarray:
    """Read an image file with the channels it has: ``(H, W, 1)`` gray or ``(H, W, 3)`` colour.

    Same conversions and errors as :func:`read_image`, without the channel conversion, so a
    caller can tell whether the file was in the mode the model expects.

    Args:
        path: The image file; with ``content``, only the name used in error messages
            (its extension is then not checked: bytes are judged by their format alone).
        content: The file's bytes, already read (e.g. by Spark's ``binaryFile`` source).

    Raises:
        ImageReadError: As :func:`read_image`.
    """
    path = Path(path)
    try:
        if content is None and not is_image_file(path):
            raise ImageReadError(path, unsupported_type_reason(path))
        if content is None and path.is_symlink() and not path.exists():
            raise ImageReadError(path, f"broken symbolic link (points to {os.readlink(path)})")
        size = len(content) if content is not None else path.stat().st_size
        if size == 0:
            raise ImageReadError(path, "file is empty (0 bytes); was it copied completely?")
        with warnings.catch_warnings():
            # A decompression-bomb *warning* becomes an error too: such files are never
            # inspection photos and decoding them can exhaust memory.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if content is None else io.BytesIO(content)) as img:
                # Both checked before decoding: neither needs the pixels.
                if img.format not in _FORMATS:
                    raise ImageReadError(
                        path,
                        f"unsupported file type: the content is a {img.format} image "
                        f"(supported: PNG, JPEG, BMP, TIFF); {_CONVERT}",
                    )
                frames = _frames(img, path)
                if frames > 1 and img.format != "MPO":
                    raise ImageReadError(
                        path,
                        f"has {frames} frames/pages; the inspection scores single photos: "
                        "save the page you want as its own file",
                    )
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_float(img, path)
    except ImageReadError:
        raise
    except FileNotFoundError as exc:
        raise ImageReadError(path, "file not found (moved or deleted while running?)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(
            path, f"image is too large to decode safely ({exc}); split or downscale it"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(
            path, "not a readable image (unknown or corrupt format; is it really an image?)"
        ) from exc
    except PermissionError as exc:
        raise ImageReadError(path, "permission denied; check the file's read permission") from exc
    except IsADirectoryError as exc:
        raise ImageReadError(path, "is a folder, not an image file") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        # Pillow reports truncated and corrupt data with any of these.
        raise ImageReadError(path, f"corrupt or truncated image data ({exc})") from exc
    except MemoryError as exc:
        raise ImageReadError(path, f"image is too large to decode ({exc})") from exc


def _frames(img: Image.Image, path: Path) -> int:
    """How many frames or pages ``img`` holds (1 for single-picture formats).

    Raises:
        ImageReadError: The list of pages is damaged.
    """
    try:
        return int(getattr(img, "n_frames", 1))
    except Exception as exc:
        # Counting TIFF pages walks every page's header; a damaged one raises whatever
        # the parser met first (KeyError for a missing tag, ...), all meaning corrupt.
        raise ImageReadError(path, f"corrupt or truncated image data ({exc!r})") from exc


def is_colour(array: np.ndarray, *, tolerance: float = 2 / 255) -> bool:
    """True when an ``(H, W, 3)`` image has real colour, not three equal gray channels.

    Cameras often save gray scenes as RGB files; those are not a channel-mode mismatch.
    """
    if array.shape[-1] != 3:
        return False
    spread = array.max(axis=-1) - array.min(axis=-1)
    return bool(spread.max(initial=0.0) > tolerance)


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a ground-truth mask as a boolean array.

    Args:
        path: Mask file; any image format. Pixels brighter than half the range are defect.

    Returns:
        Boolean array of shape ``(H, W)``.

    Raises:
        ImageReadError: The file cannot be read.
    """
    return read_image(path, channels=1)[..., 0] > 0.5


def array_to_image(array: np.ndarray, *, channels: int) -> np.ndarray:
    """Convert an in-memory image to the ``(H, W, channels)`` float32 ``[0, 1]`` form.

    Args:
        array: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped);
            uint8 (0-255), uint16 (0-65535) or float: in ``[0, 1]``, or grey levels when
            any value exceeds 1 (up to 255: 8-bit, else 16-bit).
        channels: 1 or 3.

    Raises:
        ValueError: Another shape, a non-numeric array, or NaN or infinite values (no
            verdict on them can be trusted, so the image is refused, as a file would be).
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"an image array must be (H, W) or (H, W, 1|3|4), got {array.shape}")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.number) and not np.issubdtype(
        array.dtype, np.complexfloating
    ):
        array = array.astype(np.float32)
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ValueError(
                f"{bad} of {array.size} values of the image array are not finite (NaN or "
                "infinity); the inspection cannot judge such an image: pass finite pixel "
                "values (fix the camera or converter that produced it)"
            )
        # Serialisation (MLflow's schema enforcement, JSON) turns uint8/uint16 pixels into
        # floats without rescaling them: values above 1 are grey levels, not [0, 1].
        peak = float(array.max(initial=0.0))
        if peak > 1.0:
            array = array / (255.0 if peak <= 255.0 else 65535.0)
        array = np.clip(array, 0.0, 1.0)
    else:
        raise ValueError(f"an image array must be numeric, got {array.dtype}")
    return match_channels(array[..., :3] if array.shape[-1] == 4 else array, channels)


def _to_float(img: Image.Image, path: Path) -> np.ndarray:
    """Convert a decoded Pillow image to ``(H, W, C)`` float32 in [0, 1], C in {1, 3}.

    Raises:
        ImageReadError: Pixels that cannot be judged, or a mode with no conversion (see
            the module docstring), naming ``path``.
    """
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        return (np.asarray(img, dtype=np.float32) / 65535.0)[..., None]
    if mode == "I":
        values = np.asarray(img)
        low, high = int(values.min(initial=0)), int(values.max(initial=0))
        if low < 0 or high > 65535:
            raise ImageReadError(
                path,
                f"32-bit integer pixels from {low} to {high}, outside the 16-bit range "
                "0-65535 the inspection reads; export the photo as 8- or 16-bit unsigned "
                "PNG or TIFF",
            )
        return (values.astype(np.float32) / 65535.0)[..., None]
    if mode == "F":
        values = np.asarray(img, dtype=np.float32)
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise ImageReadError(
                path,
                f"{bad} of {values.size} pixels are not finite (NaN or infinity); no "
                "verdict on such a photo can be trusted: fix the camera/converter export "
                "(finite values, or 8- or 16-bit integer pixels)",
            )
        return np.clip(values, 0.0, 1.0)[..., None]
    if mode == "La":
        # Premultiplied alpha has no direct conversion to L; LA divides it out first.
        img = img.convert("LA")
    if mode in ("1", "L", "LA", "La"):
        return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[..., None]
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    try:
        rgb = img.convert("RGB")
    except ValueError as exc:
        raise ImageReadError(
            path,
            f"pixel mode {mode} cannot be converted to gray or RGB ({exc}); export the "
            "photo as 8- or 16-bit gray or RGB",
        ) from exc
    return np.asarray(rgb, dtype=np.float32) / 255.0


def match_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """Convert ``(H, W, 1|3)`` to ``channels`` (luma weights to gray; gray replicated to RGB)."""
    if array.shape[-1] == channels:
        return np.ascontiguousarray(array, dtype=np.float32)
    if channels == 1:
        return (array @ _LUMA)[..., None].astype(np.float32)
    return np.repeat(array, 3, axis=-1)
