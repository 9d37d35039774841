"""Gray or colour model input, chosen from the training photos (``data.channels: auto``).

A gray model sees a colour photo through luma weights: a stain of another hue but the
same brightness, a wrong-coloured wire or a faded print vanish before the model sees
them. A colour model of a gray line camera's photos only triples the decoding. So the
input is colour where most of the training photos are: a few photos, decoded, answer it
(a gray scene saved as an RGB file counts as gray, :func:`~anomaly.data.images.is_colour`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from anomaly.data.images import is_colour, read_native
from anomaly.errors import ConfigError, ImageReadError

log = logging.getLogger(__name__)
# Decoded, not only their headers read: spread over the list, a few show the camera.
SAMPLE = 16


def colour_count(paths: Sequence[str | os.PathLike[str]]) -> tuple[int, int]:
    """How many of up to :data:`SAMPLE` photos, spread over ``paths``, are in colour.

    Returns:
        ``(in colour, read)``; unreadable files are passed over (the data loader reports
        them, with reasons).
    """
    paths = list(paths)
    picked = sorted({round(i) for i in np.linspace(0, len(paths) - 1, min(SAMPLE, len(paths)))})
    coloured = read = 0
    for path in (paths[i] for i in picked):
        try:
            image = read_native(path)
        except (ImageReadError, OSError, ValueError):
            continue
        read += 1
        coloured += is_colour(image)
    return coloured, read


def resolve_channels(channels: object, paths: Sequence[str | os.PathLike[str]]) -> int:
    """``data.channels``: 1 or 3 as given, or for ``auto`` 3 where most photos have colour.

    Args:
        channels: The setting: 1, 3 or ``auto``.
        paths: The defect-free training photos.

    Raises:
        ConfigError: Anything else (names the key and the choices).
    """
    if channels in (1, 3) and not isinstance(channels, bool):
        return int(channels)  # type: ignore[arg-type]
    if channels != "auto":
        raise ConfigError(
            f"data.channels={channels!r}: give auto (from the training photos), 1 (gray) "
            "or 3 (RGB)"
        )
    coloured, read = colour_count(paths)
    # No photo to read: the data module reports the photos; gray is the cheaper guess.
    chosen = 3 if read and 2 * coloured >= read else 1
    log.info(
        "data.channels=auto: %s, %d of %d sampled training photos in colour; "
        "override with data.channels=%d",
        "RGB (3)" if chosen == 3 else "gray (1)",
        coloured,
        read,
        4 - chosen,
    )
    return chosen
