"""Per-pixel reconstruction-error maps and image scores."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from anomaly.errors import ConfigError
from anomaly.similarity.gms import msgms_map
from anomaly.similarity.ssim import gaussian_filter, ssim

MAP_KINDS = ("l2", "ssim", "mix", "msgms")
SCORE_METHODS = ("max", "topk", "area")


@dataclass(frozen=True)
class MapSettings:
    """How reconstruction errors become an anomaly map and an image score.

    Attributes:
        kind: ``l2`` (squared error, channel mean), ``ssim`` (1 - SSIM, channel mean),
            ``mix`` (``(1 - ssim_weight) * l2 + ssim_weight * ssim``) or ``msgms``
            (1 - multi-scale gradient-magnitude similarity, channel mean, as in RIAD).
        smoothing_sigma: Gaussian smoothing of the map in model pixels; 0 disables it.
        ssim_sigma: Gaussian window of the SSIM map.
        ssim_weight: Weight of the SSIM map in ``mix``, in ``[0, 1]``.
        score: How a map becomes one image score: ``max`` of the smoothed map, ``topk``
            (mean of the ``topk`` largest values) or ``area`` (fraction of the map above the
            pixel threshold).
        topk: Number of map values averaged by ``topk``.
    """

    kind: str = "l2"
    smoothing_sigma: float = 2.0
    ssim_sigma: float = 1.5
    ssim_weight: float = 0.5
    score: str = "max"
    topk: int = 100

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
        if not 0.0 <= self.ssim_weight <= 1.0:
            raise ConfigError(f"scoring.ssim_weight must be in [0, 1], got {self.ssim_weight!r}")
        if isinstance(self.topk, bool) or not isinstance(self.topk, int) or self.topk < 1:
            raise ConfigError(f"scoring.topk must be a positive integer, got {self.topk!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form."""
        return asdict(self)


def error_map(
    x: torch.Tensor,
    recon: torch.Tensor,
    *,
    kind: str,
    ssim_sigma: float = 1.5,
    ssim_weight: float = 0.5,
) -> torch.Tensor:
    """Per-pixel reconstruction error.

    Args:
        x: Inputs ``(N, C, H, W)`` in ``[0, 1]``.
        recon: Reconstructions, same shape.
        kind: ``l2`` (values in ``[0, 1]``), ``ssim`` (``1 - SSIM``, values in ``[0, 2]``),
            ``mix`` (their weighted sum) or ``msgms`` (``1 - MSGMS`` over 4 scales, values
            in ``[0, 1)``; see :func:`anomaly.similarity.gms.msgms_map`).
        ssim_sigma: SSIM gaussian window.
        ssim_weight: Weight of the SSIM map in ``mix``.

    Returns:
        Map ``(N, 1, H, W)``, averaged over channels.
    """
    if kind == "l2":
        return (x - recon).pow(2).mean(dim=1, keepdim=True)
    if kind == "ssim":
        _, s_map = ssim(x, recon, data_range=1.0, sigma=ssim_sigma, full=True)
        return (1.0 - s_map).mean(dim=1, keepdim=True)
    if kind == "mix":
        l2 = error_map(x, recon, kind="l2")
        return (1.0 - ssim_weight) * l2 + ssim_weight * error_map(
            x, recon, kind="ssim", ssim_sigma=ssim_sigma
        )
    if kind == "msgms":
        return (1.0 - msgms_map(x, recon)).mean(dim=1, keepdim=True)
    raise ConfigError(f"map kind {kind!r} is unknown; choose one of {MAP_KINDS}")


def raw_map(
    x: torch.Tensor,
    reconstructions: list[tuple[float, torch.Tensor]],
    settings: MapSettings,
) -> torch.Tensor:
    """Weighted sum of the error maps of one or more reconstructions, unsmoothed.

    Args:
        x: Inputs ``(N, C, H, W)`` in ``[0, 1]``.
        reconstructions: ``(weight, reconstruction)`` pairs; one pair with weight 1 for a
            plain autoencoder.
        settings: Map kind.

    Returns:
        ``(N, 1, H, W)``.
    """
    return sum(
        w
        * error_map(
            x,
            r,
            kind=settings.kind,
            ssim_sigma=settings.ssim_sigma,
            ssim_weight=settings.ssim_weight,
        )
        for w, r in reconstructions
    )


def smooth(maps: torch.Tensor, settings: MapSettings) -> torch.Tensor:
    """Gaussian smoothing of ``(N, 1, H, W)`` maps (identity when the sigma is 0)."""
    if settings.smoothing_sigma > 0:
        return gaussian_filter(maps, settings.smoothing_sigma)
    return maps


def anomaly_map(
    x: torch.Tensor,
    reconstructions: list[tuple[float, torch.Tensor]],
    settings: MapSettings,
) -> torch.Tensor:
    """Smoothed anomaly map ``(N, 1, H, W)``; larger means less normal."""
    return smooth(raw_map(x, reconstructions, settings), settings)


def image_scores(
    maps: torch.Tensor,
    *,
    method: str = "max",
    topk: int = 100,
    pixel_threshold: float | None = None,
) -> torch.Tensor:
    """One score per image from its anomaly map.

    Args:
        maps: ``(N, 1, H, W)``.
        method: ``max``; ``topk`` (mean of the ``topk`` largest values, steadier than one
            pixel); ``area`` (fraction of pixels above ``pixel_threshold``).
        topk: Values averaged by ``topk`` (capped at the map size).
        pixel_threshold: Required by ``area``.

    Returns:
        ``(N,)`` scores.
    """
    flat = maps.flatten(1)
    if method == "max":
        return flat.amax(dim=1)
    if method == "topk":
        return flat.topk(min(topk, flat.shape[1]), dim=1).values.mean(dim=1)
    if method == "area":
        if pixel_threshold is None:
            raise ValueError("the area score needs the pixel threshold")
        return (flat > pixel_threshold).float().mean(dim=1)
    raise ConfigError(f"scoring.score={method!r} is unknown; choose one of {SCORE_METHODS}")
