"""The model input's size, chosen from the training photos (``data.image_size: auto``).

A square input squashes a tall or wide part: KolektorSDD's 398×1000 photos squashed to
a square lost AUPRO 0.85 → 0.60 with pretrained features. So the input keeps the photos'
typical aspect: the short side is ``data.short_side`` (the model's preference: 128 for
the from-scratch models, 224 for ImageNet features), the long side follows the median
aspect of the training photos, capped at ``data.max_aspect`` times the short side, both
rounded to multiples of 16 (the models' stride).
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
    train_paths: Sequence[Path],
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
        sizes = photo_sizes(train_paths)
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
    upright: object, train_paths: Sequence[Path], image_size: Sequence[int], *, tile: bool
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
    sizes = photo_sizes(train_paths)
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
