"""Writing results: CSV files that only ever hold whole rows, and the per-image pictures."""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomaly.io import atomic_open
from anomaly.scoring.figures import heatmap_png, overlay_png, png_bytes
from anomaly.scoring.verdict import ImageResult


@dataclass(frozen=True)
class OutputSettings:
    """Which per-image files ``score_folder`` writes besides the tables."""

    masks: bool = True
    heatmaps: bool = True
    overlays: bool = True
    parquet: bool = True


class CsvAppender:
    """A CSV file that only ever holds whole rows, even when the disk fills up.

    Rows are written in blocks with unbuffered writes; when a write fails part-way (no
    space left, file system gone read-only) the file is cut back to the end of the last
    complete block, so a reader never sees a truncated row.

    Args:
        path: The file (replaced).
        header: Column names, written first.
        lazy: Create the file only when the first rows arrive (``errors.csv``).
    """

    def __init__(self, path: Path, header: Sequence[str], *, lazy: bool = False) -> None:
        self.path = path
        self.header = list(header)
        self.rows = 0
        self._file: Any = None
        self._good = 0
        if not lazy:
            self._open()

    def _open(self) -> None:
        self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        self._write([self.header])

    def append(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append whole rows; on an ``OSError`` none of them is left in the file."""
        if not rows:
            return
        if self._file is None:
            self._open()
        self._write(rows)
        self.rows += len(rows)

    def _write(self, rows: Sequence[Sequence[Any]]) -> None:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        data = memoryview(text.getvalue().encode("utf-8"))
        try:
            while data:
                data = data[self._file.write(data) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), self._good)
            raise
        self._good = self._file.tell()

    def close(self) -> None:
        """Close the file (if it was ever created)."""
        if self._file is not None:
            self._file.close()


def write_pictures(
    output_dir: Path,
    name: Path,
    result: ImageResult,
    original: np.ndarray | None,
    pixel_threshold: float,
    outputs: OutputSettings,
) -> None:
    """Write one image's mask, heatmap and overlay PNGs, each atomically.

    Args:
        output_dir: Results folder; the PNGs go to ``masks/``, ``heatmaps/`` and
            ``overlays/`` under it.
        name: Relative path of the PNGs (the image's relative path with ``.png``).
        result: The verdict on the image.
        original: The decoded ``(H, W, C)`` uint8 image, for the overlay (None: none).
        pixel_threshold: Where the heatmap's colour scale marks defects.
        outputs: Which of the three to write.
    """
    if outputs.masks:
        _write_bytes(output_dir / "masks" / name, png_bytes(result.mask))
    if outputs.heatmaps:
        _write_bytes(output_dir / "heatmaps" / name, heatmap_png(result.score_map, pixel_threshold))
    if outputs.overlays and original is not None:
        _write_bytes(output_dir / "overlays" / name, overlay_png(original, result.labels))


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb", durable=False) as handle:
        handle.write(data)
