"""Inspecting large images window by window and stitching the maps without seams."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

MapFn = Callable[[torch.Tensor], torch.Tensor]


def tile_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``[0, length)``; the last one ends at ``length``.

    Args:
        length: Image side in pixels (at least ``window``).
        window: Window side.
        stride: Step between windows (at most ``window``).
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def tiled_map(
    image: torch.Tensor,
    map_fn: MapFn,
    *,
    window: tuple[int, int],
    stride: tuple[int, int],
    batch_size: int = 32,
) -> torch.Tensor:
    """A per-pixel result (anomaly map, reconstruction) of a whole image, window by window.

    Every pixel's value is the mean over the windows that cover it (averaged overlaps, so
    there is no seam where windows meet). Images smaller than the window are padded by edge
    replication and the padding is cut off again.

    Args:
        image: ``(C, H, W)`` tensor.
        map_fn: Maps a batch of windows ``(n, C, h, w)`` to ``(n, K, h, w)`` (raw maps:
            K = 1; reconstructions: K = C).
        window: Window ``(h, w)``: the model's input size.
        stride: Step ``(row, col)`` between windows.
        batch_size: Windows per call of ``map_fn``.

    Returns:
        ``(K, H, W)`` tensor.
    """
    _, height, width = image.shape
    wh, ww = window
    pad_h, pad_w = max(0, wh - height), max(0, ww - width)
    if pad_h or pad_w:
        image = F.pad(image[None], (0, pad_w, 0, pad_h), mode="replicate")[0]
    _, ph, pw = image.shape
    positions = [
        (y, x) for y in tile_starts(ph, wh, stride[0]) for x in tile_starts(pw, ww, stride[1])
    ]
    total: torch.Tensor | None = None
    count = torch.zeros(1, ph, pw, dtype=image.dtype)
    for i in range(0, len(positions), batch_size):
        chunk = positions[i : i + batch_size]
        windows = torch.stack([image[:, y : y + wh, x : x + ww] for y, x in chunk])
        maps = map_fn(windows)
        if total is None:
            total = torch.zeros(maps.shape[1], ph, pw, dtype=maps.dtype)
        for (y, x), tile in zip(chunk, maps, strict=True):
            total[:, y : y + wh, x : x + ww] += tile
            count[:, y : y + wh, x : x + ww] += 1
    return (total / count)[:, :height, :width]
