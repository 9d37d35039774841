"""Reconstruction losses, built by name from the ``loss`` config group."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from anomaly.errors import ConfigError
from anomaly.scoring.ssim import ms_ssim, ssim

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES = ("l2", "l1", "ssim", "ms_ssim", "l2_ssim")


def build_loss(name: str, *, ssim_sigma: float = 1.5, ssim_weight: float = 0.5) -> LossFn:
    """Return ``loss(recon, target) -> scalar`` for a loss name.

    Args:
        name: ``l2`` (mean squared error), ``l1`` (mean absolute error), ``ssim``
            (1 - mean SSIM), ``ms_ssim`` (1 - mean multi-scale SSIM, with as many scales as
            the image allows) or ``l2_ssim`` (``(1 - ssim_weight) * l2 + ssim_weight * ssim``).
        ssim_sigma: Gaussian window of the SSIM terms.
        ssim_weight: Weight of the SSIM term in ``l2_ssim``, in ``[0, 1]``.

    Raises:
        ConfigError: Unknown name or weight out of range (names the ``loss.*`` key).
    """
    if not 0.0 <= ssim_weight <= 1.0:
        raise ConfigError(f"loss.ssim_weight must be in [0, 1], got {ssim_weight!r}")

    def ssim_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - ssim(recon, target, data_range=1.0, sigma=ssim_sigma).mean()

    if name == "l2":
        return F.mse_loss
    if name == "l1":
        return F.l1_loss
    if name == "ssim":
        return ssim_loss
    if name == "ms_ssim":
        return lambda r, t: 1.0 - ms_ssim(r, t, data_range=1.0, sigma=ssim_sigma).mean()
    if name == "l2_ssim":
        return lambda r, t: (1 - ssim_weight) * F.mse_loss(r, t) + ssim_weight * ssim_loss(r, t)
    raise ConfigError(f"loss.name={name!r} is unknown; choose one of {LOSSES}")
