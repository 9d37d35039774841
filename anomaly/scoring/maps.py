"""Per-pixel reconstruction-error maps and image scores."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from anomaly.errors import ConfigError
from anomaly.scoring.ssim import gaussian_filter, ssim

MAP_KINDS = ("l2", "ssim")
SCORE_METHODS = ("max",)


@dataclass(frozen=True)
class MapSettings:
    """How reconstruction errors become an anomaly map and an image score.

    Attributes:
        kind: ``l2`` (squared error, channel mean) or ``ssim`` (1 - SSIM, channel mean).
        smoothing_sigma: Gaussian smoothing of the map in model pixels; 0 disables it.
        ssim_sigma: Gaussian window of the SSIM map.
        score: How a map becomes one image score; ``max`` of the smoothed map.
    """

    kind: str = "ssim"
    smoothing_sigma: float = 2.0
    ssim_sigma: float = 1.5
    score: str = "max"

    def __post_init__(self) -> None:
        if self.kind not in MAP_KINDS:
            raise ConfigError(f"scoring.map={self.kind!r} is unknown; choose one of {MAP_KINDS}")
        if self.score not in SCORE_METHODS:
            raise ConfigError(
                f"scoring.score={self.score!r} is unknown; choose one of {SCORE_METHODS}"
            )
        if not self.smoothing_sigma >= 0:
            raise ConfigError(
                f"scoring.smoothing_sigma must be >= 0 (0 disables), got {self.smoothing_sigma!r}"
            )
        if not self.ssim_sigma > 0:
            raise ConfigError(f"scoring.ssim_sigma must be > 0, got {self.ssim_sigma!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form."""
        return asdict(self)


def error_map(
    x: torch.Tensor, recon: torch.Tensor, *, kind: str, ssim_sigma: float = 1.5
) -> torch.Tensor:
    """Per-pixel reconstruction error.

    Args:
        x: Inputs ``(N, C, H, W)`` in ``[0, 1]``.
        recon: Reconstructions, same shape.
        kind: ``l2`` (values in ``[0, 1]``) or ``ssim`` (``1 - SSIM``, values in ``[0, 2]``).
        ssim_sigma: SSIM gaussian window.

    Returns:
        Map ``(N, 1, H, W)``, averaged over channels.
    """
    if kind == "l2":
        return (x - recon).pow(2).mean(dim=1, keepdim=True)
    if kind == "ssim":
        _, s_map = ssim(x, recon, data_range=1.0, sigma=ssim_sigma, full=True)
        return (1.0 - s_map).mean(dim=1, keepdim=True)
    raise ConfigError(f"map kind {kind!r} is unknown; choose one of {MAP_KINDS}")


def anomaly_map(
    x: torch.Tensor,
    reconstructions: list[tuple[float, torch.Tensor]],
    settings: MapSettings,
) -> torch.Tensor:
    """Weighted sum of the error maps of one or more reconstructions, then smoothed.

    Args:
        x: Inputs ``(N, C, H, W)`` in ``[0, 1]``.
        reconstructions: ``(weight, reconstruction)`` pairs; one pair with weight 1 for a
            plain autoencoder.
        settings: Map kind and smoothing.

    Returns:
        Anomaly map ``(N, 1, H, W)``; larger means less normal.
    """
    total = sum(
        w * error_map(x, r, kind=settings.kind, ssim_sigma=settings.ssim_sigma)
        for w, r in reconstructions
    )
    if settings.smoothing_sigma > 0:
        total = gaussian_filter(total, settings.smoothing_sigma)
    return total


def image_scores(maps: torch.Tensor, *, method: str = "max") -> torch.Tensor:
    """One score per image from its anomaly map.

    Args:
        maps: ``(N, 1, H, W)``.
        method: ``max``.

    Returns:
        ``(N,)`` scores.
    """
    if method == "max":
        return maps.flatten(1).amax(dim=1)
    raise ConfigError(f"score method {method!r} is unknown; choose one of {SCORE_METHODS}")
