"""Reconstruction losses, built by name from the ``loss`` config group."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from anomaly.errors import ConfigError
from anomaly.similarity.gms import msgms_map
from anomaly.similarity.ssim import ms_ssim, ssim

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES = ("l2", "l1", "ssim", "ms_ssim", "l2_ssim", "msgms", "riad")


def build_loss(name: str, *, ssim_sigma: float = 1.5, ssim_weight: float = 0.5) -> LossFn:
    """Return ``loss(recon, target) -> scalar`` for a loss name.

    Args:
        name: ``l2`` (mean squared error), ``l1`` (mean absolute error), ``ssim``
            (1 - mean SSIM), ``ms_ssim`` (1 - mean multi-scale SSIM, with as many scales as
            the image allows), ``l2_ssim`` (``(1 - ssim_weight) * l2 + ssim_weight * ssim``),
            ``msgms`` (mean of 1 - multi-scale gradient-magnitude similarity over 4 scales,
            see :func:`anomaly.similarity.gms.msgms_map`) or ``riad`` (RIAD's
            ``l2 + ssim + msgms``, each with weight 1; Zavrtanik et al. 2021).
        ssim_sigma: Gaussian window of the SSIM terms (``ssim``, ``ms_ssim``, ``l2_ssim``,
            ``riad``).
        ssim_weight: Weight of the SSIM term in ``l2_ssim``, in ``[0, 1]``.

    Raises:
        ConfigError: Unknown name or weight out of range (names the ``loss.*`` key).
    """
    if not 0.0 <= ssim_weight <= 1.0:
        raise ConfigError(f"loss.ssim_weight must be in [0, 1], got {ssim_weight!r}")

    def ssim_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - ssim(recon, target, data_range=1.0, sigma=ssim_sigma).mean()

    def msgms_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - msgms_map(recon, target).mean()

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
    if name == "msgms":
        return msgms_loss
    if name == "riad":
        return lambda r, t: F.mse_loss(r, t) + ssim_loss(r, t) + msgms_loss(r, t)
    raise ConfigError(f"loss.name={name!r} is unknown; choose one of {LOSSES}")
