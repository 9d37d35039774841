"""Reconstruction losses, built by name from the ``loss`` config group."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from anomaly.errors import ConfigError
from anomaly.scoring.ssim import ssim

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES = ("l2", "ssim")


def build_loss(name: str, *, ssim_sigma: float = 1.5) -> LossFn:
    """Return ``loss(recon, target) -> scalar`` for a loss name.

    Args:
        name: ``l2`` (mean squared error) or ``ssim`` (1 - mean SSIM, data range 1).
        ssim_sigma: Gaussian window of the SSIM loss.

    Raises:
        ConfigError: Unknown name (names the ``loss.name`` key and the valid choices).
    """
    if name == "l2":
        return F.mse_loss
    if name == "ssim":
        return lambda recon, target: (
            1.0 - ssim(recon, target, data_range=1.0, sigma=ssim_sigma).mean()
        )
    raise ConfigError(f"loss.name={name!r} is unknown; choose one of {LOSSES}")
