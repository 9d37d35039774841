"""The position score: the map's image score taken on the map standardised per position.

A model's map is not equally high everywhere on defect-free photos: along the photo's
border (padding, the part's edge, the background behind it) it is higher and varies
more than in the middle. With ``feature_ae`` on Magnetic Tile 97% of the defect-free
test photos had their map's maximum within 8 pixels of the border, so the maximum told
defects from good parts poorly (image AUROC 0.79). Standardising each position by the
mean and spread of the training photos' maps there, before taking the maximum, let the
maximum say what is unusual *for that place* (0.89 there; KolektorSDD 0.95 -> 0.98, the
demo 0.96 -> 1.00).

Where the photos are all framed alike (``scoring.position_score.pixels``, decided by
:func:`~anomaly.data.geometry.resolve_position_pixels`), a position is the same spot of
the part in every photo and the pixel map itself is standardised, so its threshold,
regions and pixel metrics see the same (KolektorSDD's AUPRO 0.833 -> 0.878). On photos
of every size, such as Magnetic Tile's, a position is no particular spot; there only the
image score uses it (standardised pixel maps cost Magnetic Tile AUPRO 0.04;
docs/quality.md, "Photos of one framing").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from anomaly.errors import ModelFolderError
from anomaly.io import read_npz, write_npz

POSITIONS_FILE = "positions.npz"
# The statistics are kept on a grid this many times coarser than the map: the maps of
# the models that use it change over 8 or more pixels, and the training photos' maps need
# not be held at full size while the statistics are fitted (a sixteenth of the memory).
POOL = 4
# Added to every position's spread, as a share of the mean spread: a position where the
# training maps hardly vary must not turn noise into the photo's maximum.
FLOOR = 0.1


def pooled(maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``(1, H, W)`` maps averaged over ``POOL`` x ``POOL`` cells (what :meth:`fit` takes)."""
    return [F.avg_pool2d(m.float(), POOL, ceil_mode=True) for m in maps]


@dataclass
class PositionStats:
    """Mean and spread of the defect-free training photos' maps at each position.

    Attributes:
        mean: ``(h, w)`` mean map on the coarse grid (see ``POOL``).
        spread: ``(h, w)`` standard deviation there, plus ``FLOOR`` times its mean.
        n_images: Training photos they were fitted on.
    """

    mean: np.ndarray
    spread: np.ndarray
    n_images: int
    _full: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def fit(cls, maps: Sequence[torch.Tensor]) -> PositionStats:
        """Fit on the pooled maps (:func:`pooled`) of defect-free photos, all of one size.

        Raises:
            ValueError: Fewer than two maps, or maps of different sizes.
        """
        sizes = {tuple(m.shape[-2:]) for m in maps}
        if len(maps) < 2 or len(sizes) != 1:
            raise ValueError(
                f"the position score needs two or more maps of one size, got {len(maps)} "
                f"of sizes {sorted(sizes)}"
            )
        stack = torch.stack([m.reshape(m.shape[-2:]) for m in maps]).double()
        mean, std = stack.mean(0), stack.std(0)
        spread = std + FLOOR * std.mean()
        return cls(mean.numpy(), spread.numpy(), n_images=len(maps))

    def standardised(self, m: torch.Tensor) -> torch.Tensor:
        """A ``(..., H, W)`` map minus the mean, over the spread, both resized to its size."""
        size = (int(m.shape[-2]), int(m.shape[-1]))
        if size not in self._full:
            stats = torch.from_numpy(np.stack([self.mean, self.spread]))[None].float()
            full = F.interpolate(stats, size=size, mode="bilinear", align_corners=False)[0]
            self._full[size] = (full[0], full[1])
        mean, spread = self._full[size]
        return (m - mean) / spread

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as ``.npz``."""
        write_npz(
            path,
            mean=self.mean.astype(np.float64),
            spread=self.spread.astype(np.float64),
            n_images=np.int64(self.n_images),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PositionStats:
        """Read a file written by :meth:`save`.

        Raises:
            ModelFolderError: Unreadable, arrays missing, of different shapes, not finite,
                or a spread that is not positive.
        """
        path = Path(path)
        fix = "restore it from the model's MLflow run or fit a new one with `anomaly calibrate`"
        as_float = lambda a: a.astype(np.float64)  # noqa: E731
        data = read_npz(path, {"mean": as_float, "spread": as_float, "n_images": int}, fix=fix)
        mean, spread = data["mean"], data["spread"]
        if (
            mean.ndim != 2
            or spread.shape != mean.shape
            or not np.isfinite(mean).all()
            or not np.isfinite(spread).all()
            or not (spread > 0).all()
        ):
            raise ModelFolderError(
                f"{path}: mean {mean.shape} and spread {spread.shape} must be finite maps of "
                f"one shape with a positive spread; {fix}"
            )
        return cls(mean, spread, n_images=data["n_images"])
