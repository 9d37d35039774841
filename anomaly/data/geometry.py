"""The model input's size, chosen from the training photos (``data.image_size: auto``).

A square input squashes a tall or wide part: KolektorSDD's 398×1000 photos squashed to
a square lost AUPRO 0.85 → 0.60 with pretrained features. So the input keeps the photos'
typical aspect: the short side is ``data.short_side`` (the model's preference: 128 for
the from-scratch models, 224 for ImageNet features), the long side follows the median
aspect of the training photos, capped at ``data.max_aspect`` times the short side, both
rounded to multiples of 16 (the models' stride).

The photos' sizes decide two more things: whether photos lying the other way round are
turned upright (``data.upright: auto``), and whether they share one framing, so that the
position score may standardise the pixel map too (``scoring.position_score.pixels:
auto``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from anomaly.errors import ConfigError

log = logging.getLogger(__name__)
MULTIPLE = 16
# Headers only; a few hundred photos give the median of thousands.
SAMPLE = 400


def photo_sizes(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[int, int]]:
    """``(height, width)`` of up to :data:`SAMPLE` photos, read from their headers.

    Unreadable files are passed over (the data loader reports them, with reasons).
    """
    step = max(1, len(paths) // SAMPLE)
    sizes = []
    for path in list(paths)[::step]:
        try:
            with Image.open(path) as img:
                width, height = img.size
        except (OSError, ValueError):
            continue
        sizes.append((height, width))
    return sizes


class TrainingPhotos:
    """The training photos, whose sizes are read from their headers once, when first asked.

    Several ``auto`` settings (the input size, upright photos, the framing) ask for the
    sizes; one read serves them all, and none happens when every setting is given.

    Args:
        paths: The training photos.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        self.paths = list(paths)
        self._sizes: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """``(height, width)`` of up to :data:`SAMPLE` of them (see :func:`photo_sizes`)."""
        if self._sizes is None:
            self._sizes = photo_sizes(self.paths)
        return self._sizes


Photos = TrainingPhotos | Sequence[str | os.PathLike[str]]


def training_photos(photos: Photos) -> TrainingPhotos:
    """``photos`` as :class:`TrainingPhotos`, so that their sizes are read once."""
    return photos if isinstance(photos, TrainingPhotos) else TrainingPhotos(photos)


def _sizes_of(photos: Photos) -> list[tuple[int, int]]:
    return training_photos(photos).sizes


def _round(side: float) -> int:
    return max(MULTIPLE, int(round(side / MULTIPLE)) * MULTIPLE)


def auto_size(
    sizes: Sequence[tuple[int, int]], *, short_side: int, max_aspect: float = 4.0
) -> tuple[int, int]:
    """The input ``(height, width)`` that keeps the photos' median aspect.

    Args:
        sizes: ``(height, width)`` of the training photos.
        short_side: Pixels of the input's shorter side.
        max_aspect: Longest side over shortest at most (a strip of a web or a seam keeps
            its resolution across, and is not made impossibly long).

    Raises:
        ConfigError: No sizes (no readable photo), or bad settings.
    """
    if short_side < MULTIPLE:
        raise ConfigError(f"data.short_side={short_side}: give at least {MULTIPLE} pixels")
    if max_aspect < 1:
        raise ConfigError(f"data.max_aspect={max_aspect}: give 1 or more")
    if not sizes:
        raise ConfigError(
            "data.image_size=auto: no readable training photo to take the size from; "
            "check data.root or give data.image_size=[height,width]"
        )
    aspect = float(np.median([h / w for h, w in sizes]))
    long_over_short = min(max(aspect, 1 / aspect), float(max_aspect))
    short = _round(short_side)
    long = _round(short_side * long_over_short)
    return (long, short) if aspect >= 1 else (short, long)


def resolve_image_size(
    image_size: object,
    train_paths: Photos,
    *,
    short_side: int,
    max_aspect: float,
    tile: bool,
) -> object:
    """``data.image_size``, ``[height, width]`` chosen from the photos when it is ``auto``.

    In tile mode the input is a square window of ``short_side``: the photo keeps its own
    shape around the windows.
    """
    if isinstance(image_size, str) and image_size != "auto":
        raise ConfigError(
            f"data.image_size={image_size!r}: give auto, a side in pixels, or [height,width]"
        )
    if image_size != "auto":
        return image_size  # as stated (Preprocess checks it)
    if tile:
        side = _round(short_side)
        size = (side, side)
    else:
        sizes = _sizes_of(train_paths)
        size = auto_size(sizes, short_side=short_side, max_aspect=max_aspect)
        heights, widths = zip(*sizes, strict=True)
        log.info(
            "image size %dx%d (height x width) from %d training photos (median %dx%d); "
            "override with data.image_size=[height,width]",
            *size,
            len(sizes),
            int(np.median(heights)),
            int(np.median(widths)),
        )
    return list(size)


# data.upright=auto turns photos when at least this share of the training photos lie the
# other way round from the input: then one input shape squeezes many photos.
UPRIGHT_SHARE = 0.1


def resolve_upright(
    upright: object, train_paths: Photos, image_size: Sequence[int], *, tile: bool
) -> bool:
    """``data.upright``, decided from the training photos when it is ``auto``.

    On when the input is not square and at least :data:`UPRIGHT_SHARE` of the training
    photos are wider than tall where the input is taller than wide (or the reverse):
    Magnetic Tile's photos (width / height 0.36-2.61) were squeezed up to three times
    across, and its wide photos' defects scored lowest (docs/quality.md, "Photos of both
    orientations").

    Raises:
        ConfigError: A value other than auto, true or false.
    """
    if upright not in ("auto", True, False):
        raise ConfigError(f"data.upright={upright!r}: give auto, true or false")
    if upright != "auto":
        return bool(upright)
    height, width = (int(v) for v in image_size)
    if tile or height == width:
        return False
    sizes = _sizes_of(train_paths)
    other = sum(1 for h, w in sizes if h != w and (w > h) != (width > height))
    share = other / max(1, len(sizes))
    turned = share >= UPRIGHT_SHARE
    if other:
        log.info(
            "%d of %d training photos lie the other way round from the %dx%d input: they are "
            "%s (data.upright=%s to choose)",
            other,
            len(sizes),
            height,
            width,
            "turned upright before resizing" if turned else "resized as they are",
            "false" if turned else "true",
        )
    return turned


# scoring.position_score.pixels=auto standardises the pixel map per position too when at
# least FRAMING_SHARE of the training photos are within FRAMING_TOLERANCE of the median
# height and width: photos of one framing, whose positions are the same place of the part.
FRAMING_TOLERANCE = 0.1
FRAMING_SHARE = 0.9


def resolve_position_pixels(
    setting: object, train_paths: Photos, *, tile: bool, used: bool = True
) -> bool:
    """``scoring.position_score.pixels``, decided from the training photos when it is ``auto``.

    Per-position statistics of the maps say where a part is unusual *for that place* only
    when a place is the same spot of the part in every photo, that is when the photos are
    all framed alike (one size, within :data:`FRAMING_TOLERANCE`). There standardising
    the pixel map lifted KolektorSDD's AUPRO from 0.833 to 0.878 and the demo's from 0.935
    to 0.941; on Magnetic Tile's photos of every size (103-617 px wide) it cost 0.04
    (docs/quality.md, "Photos of one framing"), so ``auto`` leaves it off there.

    Args:
        setting: auto, true or false.
        train_paths: The training photos (their headers are read for ``auto``).
        tile: Tile mode (no position score there).
        used: Whether the position score is in use at all; false when it is not.

    Raises:
        ConfigError: A value other than auto, true or false.
    """
    if setting not in ("auto", True, False):
        raise ConfigError(
            f"scoring.position_score.pixels={setting!r}: give auto, true or false"
        )
    if not used:
        return False
    if setting != "auto":
        return bool(setting)
    if tile:
        return False
    sizes = np.array(_sizes_of(train_paths), dtype=np.float64).reshape(-1, 2)
    if len(sizes) < 2:
        return False
    off = np.abs(sizes / np.median(sizes, axis=0) - 1.0) > FRAMING_TOLERANCE
    framed = float(np.mean(~off.any(axis=1)))
    alike = framed >= FRAMING_SHARE
    log.info(
        "%.0f%% of the training photos share one framing (height and width within %.0f%% of "
        "the median): %s",
        100 * framed,
        100 * FRAMING_TOLERANCE,
        "the pixel map is standardised per position, for parts that lie alike in every "
        "photo (scoring.position_score.pixels=false if yours do not)"
        if alike
        else "the pixel map stays the model's (scoring.position_score.pixels=true to "
        "standardise it per position)",
    )
    return alike
