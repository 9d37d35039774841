"""A pixel-level term of the map from the trained network's own features: the patch map.

The segmenter of DRAEM marks what looks like the synthetic anomalies it was shown (local
blobs) and, over a large changed area, mostly its edge. The reconstruction network's
bottleneck describes the texture of every part of the image. So each position of an
image's bottleneck is compared with a memory of the bottleneck positions of the
defect-free training images: its distance to the nearest one, upsampled to the map's
size, is the *patch map* (the memory bank of PatchCore, Roth et al. 2022, on features
learned here from scratch instead of pretrained ones). A part of a photo unlike any part
of any training photo scores high wherever it lies, so the memory also holds the normal
variety that one Gaussian would blur (tile edges, stripes, background).

The memory is a greedy k-centre coreset of the training positions (PatchCore's
subsampling): it keeps the rare normal patches that a random sample drops. Calibration
puts the patch map on the map's scale (``patch_scale``, fitted on the defect-free
validation images) and the detector adds ``patch_scale * patch map`` to the model's own
map. On Magnetic Tile this lifts pixel AUROC from 0.70 to about 0.78 and AUPRO from 0.71
to 0.73 (docs/quality.md row 65). ``feature_ae`` gives the positions of its pretrained
network's stride-32 stages instead (its ``patch_grid``): there the memory lifts Magnetic
Tile's pixel AUROC from 0.781 to 0.821 ("The coarse patch map").
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from anomaly.errors import ConfigError, ModelFolderError
from anomaly.io import read_npz, write_npz

log = logging.getLogger(__name__)

PATCHES_FILE = "patches.npz"
# scoring.patch_map defaults: the patch map's weight against the model's map (both
# standardised on the validation images), the share of training positions kept and the
# most kept in all.
DEFAULT_WEIGHT = 0.5
DEFAULT_CORESET = 0.25
DEFAULT_MAX_PATCHES = 20_000
# Rows of queries compared with the memory at once: bounds the float64 distance matrix
# to about 80 MB for a memory of 20 000 patches.
_CHUNK = 512
# Memory rows ranked nearest in float32 whose distances are then measured exactly: far
# more than the rows that float32 rounding can leave tied with the nearest.
_CANDIDATES = 16


def check_patch_settings(*, weight: float, coreset: float, max_patches: int) -> None:
    """Validate ``scoring.patch_map``'s numbers.

    Raises:
        ConfigError: A value out of range (names the key).
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise ConfigError(
            f"scoring.patch_map.weight must be a number > 0, got {weight!r} (to turn the "
            "patch map off, set scoring.patch_map.enabled=false)"
        )
    if isinstance(coreset, bool) or not isinstance(coreset, (int, float)) or not 0 < coreset <= 1:
        raise ConfigError(f"scoring.patch_map.coreset must be in (0, 1], got {coreset!r}")
    if isinstance(max_patches, bool) or not isinstance(max_patches, int) or max_patches < 1:
        raise ConfigError(
            f"scoring.patch_map.max_patches must be an integer >= 1, got {max_patches!r}"
        )


def _float32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)


def positions(feature_maps: torch.Tensor) -> torch.Tensor:
    """Feature maps ``(N, D, h, w)`` as rows ``(N * h * w, D)``, one per position."""
    return feature_maps.permute(0, 2, 3, 1).reshape(-1, feature_maps.shape[1])


def greedy_coreset(
    rows: torch.Tensor,
    n: int,
    *,
    projection: int | None = 128,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Indices of ``n`` rows chosen by greedy k-centre selection.

    Starting from row 0, each step adds the row farthest from all chosen so far, so the
    chosen rows cover every part of the set, rare ones included (Sener and Savarese 2018;
    PatchCore's coreset). Distances are measured after a seeded random projection to
    ``projection`` dimensions (Johnson-Lindenstrauss: they keep their order closely at a
    fraction of the cost); None measures them in full.

    Args:
        rows: ``(M, D)`` float rows.
        n: How many to choose; all rows (in order) when ``n >= M``.
        projection: Dimensions of the random projection, or None.
        seed: Seed of the projection.
        progress: Called with ``(chosen, n)`` every 1000 rows.

    Returns:
        ``(min(n, M),)`` int64 indices, in the order chosen.
    """
    m = rows.shape[0]
    if n >= m:
        return torch.arange(m)
    z = rows.float().numpy()
    if projection is not None and projection < rows.shape[1]:
        g = np.random.default_rng(seed)
        z = z @ g.standard_normal((rows.shape[1], projection)).astype(np.float32)
    z = np.ascontiguousarray(z, dtype=np.float32)
    z_sq = np.einsum("ij,ij->i", z, z)
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = 0
    # numpy, not torch: the loop runs thousands of small vector steps, and torch's
    # per-operation threading made each 10-40x slower on two busy cores.
    nearest = np.maximum(z_sq - 2.0 * (z @ z[0]) + z_sq[0], 0.0)
    for i in range(1, n):
        j = int(nearest.argmax())
        chosen[i] = j
        np.minimum(nearest, np.maximum(z_sq - 2.0 * (z @ z[j]) + z_sq[j], 0.0), out=nearest)
        if progress is not None and (i + 1) % 1000 == 0:
            progress(i + 1, n)
    return torch.from_numpy(chosen)


@dataclass
class PatchMemory:
    """Bottleneck positions of defect-free training images, for the patch map.

    Attributes:
        bank: ``(M, D)`` float32 feature rows (a coreset of all training positions).
        n_images: Number of training images they came from.
        n_positions: Number of positions before the coreset (for the record).
    """

    bank: np.ndarray
    n_images: int = 0
    n_positions: int = 0

    def __post_init__(self) -> None:
        self._bank = torch.from_numpy(np.ascontiguousarray(self.bank, dtype=np.float64))
        self._bank32 = self._bank.float()
        self._bank_sq32 = (self._bank**2).sum(1).float()

    @property
    def dim(self) -> int:
        """Length of one feature row."""
        return int(self.bank.shape[1])

    @classmethod
    def fit(
        cls,
        feature_maps: torch.Tensor,
        *,
        coreset: float = DEFAULT_CORESET,
        max_patches: int = DEFAULT_MAX_PATCHES,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> PatchMemory:
        """Fit on the ``(N, D, h, w)`` feature maps of defect-free images.

        Keeps ``coreset`` of the ``N * h * w`` positions, at most ``max_patches``.

        Raises:
            ValueError: Fewer than two images, or non-finite features.
        """
        if feature_maps.ndim != 4 or feature_maps.shape[0] < 2:
            raise ValueError(
                f"the patch map needs feature maps of at least two images, got shape "
                f"{tuple(feature_maps.shape)}; add training images or set "
                "scoring.patch_map.enabled=false"
            )
        rows = positions(feature_maps.float())
        if not torch.isfinite(rows).all():
            raise ValueError("the training images' features are not all finite")
        n = max(1, min(max_patches, math.ceil(coreset * rows.shape[0])))
        index = greedy_coreset(rows, n, seed=seed, progress=progress)
        return cls(
            bank=rows[index].numpy(),
            n_images=int(feature_maps.shape[0]),
            n_positions=int(rows.shape[0]),
        )

    def distances(self, feature_maps: torch.Tensor) -> torch.Tensor:
        """Distance of each position to its nearest memory row, ``(N, h, w)`` float32.

        The search runs in two steps. In float32 (twice as fast as float64) the expanded
        ``|b|^2 - 2ab`` ranks the memory rows and keeps the :data:`_CANDIDATES` nearest;
        the distance to each of those is then measured directly in float64 and the least
        is taken. The float32 ranking loses small distances to cancellation, so it cannot
        tell near-ties apart and orders them differently with the batch or thread count;
        the exact second step breaks them the same way every time, so an image's map does
        not depend on the batch it is scored in.

        Raises:
            ValueError: Features of another length than the memory's.
        """
        if feature_maps.ndim != 4 or feature_maps.shape[1] != self.dim:
            raise ValueError(
                f"feature maps of shape {tuple(feature_maps.shape)} do not fit a patch memory "
                f"of {self.dim} features"
            )
        n, _, h, w = feature_maps.shape
        rows = positions(feature_maps.double())
        k = min(_CANDIDATES, self._bank.shape[0])
        out = torch.empty(rows.shape[0], dtype=torch.float64)
        for start in range(0, rows.shape[0], _CHUNK):
            q = rows[start : start + _CHUNK]
            # |q|^2 is the same for every memory row, so it does not change the ranking.
            ranking = self._bank_sq32[None] - 2.0 * q.float() @ self._bank32.T
            candidates = ranking.topk(k, dim=1, largest=False).indices
            exact = (q[:, None, :] - self._bank[candidates]).pow(2).sum(2)
            out[start : start + q.shape[0]] = exact.min(dim=1).values.sqrt()
        return out.view(n, h, w).float()

    def patch_map(self, feature_maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """:meth:`distances` upsampled (bilinear) to ``size``: ``(N, 1, *size)``."""
        d = self.distances(feature_maps)[:, None]
        return F.interpolate(d, size=size, mode="bilinear", align_corners=False)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as ``.npz``, atomically."""
        write_npz(
            path,
            bank=np.asarray(self.bank, dtype=np.float32),
            n_images=np.int64(self.n_images),
            n_positions=np.int64(self.n_positions),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchMemory:
        """Read a file written by :meth:`save`.

        Raises:
            ModelFolderError: Unreadable, an array missing, or a bank that is not a
                non-empty finite ``(M, D)`` matrix.
        """
        path = Path(path)
        data = read_npz(
            path,
            {"bank": _float32, "n_images": int, "n_positions": int},
            fix="restore it from the model's MLflow run or fit a new one with "
            "`anomaly calibrate` after deleting it",
        )
        bank = data["bank"]
        if bank.ndim != 2 or bank.shape[0] == 0 or not np.isfinite(bank).all():
            raise ModelFolderError(
                f"{path}: bank of shape {bank.shape} is not a finite (patches, features) "
                "matrix; restore it from the model's MLflow run or retrain"
            )
        return cls(bank=bank, n_images=data["n_images"], n_positions=data["n_positions"])


def patch_scale(map_values: np.ndarray, patch_values: np.ndarray, *, weight: float) -> float:
    """The factor that puts the patch map on the model map's scale.

    ``map + scale * patch`` ranks pixels as ``z(map) + weight * z(patch)`` does, the
    standard deviations those of the defect-free validation pixels, and stays
    non-negative (distances are).

    Args:
        map_values: The model map's values on validation images, any shape.
        patch_values: The patch map's values on the same pixels.
        weight: The patch map's weight.
    """
    map_std = float(np.std(map_values))
    patch_std = float(np.std(patch_values))
    if not (patch_std > 0 and math.isfinite(patch_std)):
        # A patch map without spread carries no ranking; it must not dominate.
        return 0.0
    # A constant model map (an untrained segmenter): the patch map alone, at unit scale.
    return weight * (map_std if map_std > 0 else patch_std) / patch_std
