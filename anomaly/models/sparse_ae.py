"""The sparse autoencoder: an activity penalty on the code.

After Géron, *Hands-On Machine Learning*, ch. 17, and Ng's CS294A notes. The code goes
through a sigmoid, so each unit's activation lies in (0, 1), and training adds
``weight`` times a penalty on how active the code is:

- ``kl``: the sum over code units ``j`` of ``KL(rho || rho_hat_j)``, the divergence
  between a target activation rate ``rho`` and the unit's mean activation ``rho_hat_j``
  over the batch (both read as Bernoulli rates). Each unit is pushed to fire for about a
  fraction ``rho`` of the images, so a normal image is described by a few units.
- ``l1``: the mean absolute activation, which pushes every activation toward 0.

The code can still be as wide as a plain autoencoder's: sparsity, not width, keeps it
from copying its input, so a defect that needs units normal images never use is
reconstructed badly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anomaly.models.conv_ae import ConvAutoencoder
from anomaly.models.dense_ae import DenseAutoencoder

SPARSITY = ("kl", "l1")
VARIANTS = ("conv", "dense")
# Mean activations are kept this far from 0 and 1, where the KL divergence is infinite.
_EPS = 1e-6


def kl_sparsity(codes: torch.Tensor, target: float) -> torch.Tensor:
    """``sum_j KL(target || rho_hat_j)`` for sigmoid codes ``(N, K)``.

    ``rho_hat_j`` is unit ``j``'s mean activation over the batch; the divergence is that
    of Bernoulli distributions: ``rho log(rho / rho_hat) + (1 - rho) log((1 - rho) / (1 -
    rho_hat))``.
    """
    rho_hat = codes.mean(dim=0).clamp(_EPS, 1 - _EPS)
    rho = torch.as_tensor(target, dtype=codes.dtype, device=codes.device)
    kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
    return kl.sum()


def sparsity_penalty(codes: torch.Tensor, kind: str, target: float) -> torch.Tensor:
    """The unweighted penalty of sigmoid codes ``(N, K)``: ``kl`` or ``l1`` (see module)."""
    if kind == "kl":
        return kl_sparsity(codes, target)
    return codes.abs().mean()


class SparseAutoencoder(nn.Module):
    """An autoencoder whose sigmoid code is kept sparse by a penalty (see module).

    Args:
        image_size: Input ``(height, width)`` or one int.
        channels: Input channels.
        latent_dim: Code units.
        variant: ``conv`` (Bergmann's convolutional encoder and decoder; sizes divisible
            by 16) or ``dense`` (fully connected layers on the flattened pixels).
        width: Channel multiplier of the ``conv`` variant.
        hidden: Hidden layer widths of the ``dense`` variant.
        sparsity: ``kl`` or ``l1``.
        target: The target activation rate ``rho`` of ``kl``, in (0, 1).
        weight: ``beta``, the penalty's weight beside the per-pixel reconstruction loss.

    Raises:
        ValueError: An unknown variant or sparsity, or a target or weight out of range.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 128,
        channels: int = 1,
        latent_dim: int = 100,
        variant: str = "conv",
        width: float = 1.0,
        hidden: Sequence[int] = (512, 128),
        sparsity: str = "kl",
        target: float = 0.05,
        weight: float = 1e-3,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if sparsity not in SPARSITY:
            raise ValueError(f"sparsity must be one of {SPARSITY}, got {sparsity!r}")
        if not 0 < target < 1:
            raise ValueError(f"target (rho) must be in (0, 1), got {target!r}")
        if not weight >= 0:
            raise ValueError(f"weight (beta) must be >= 0, got {weight!r}")
        self.variant = variant
        self.sparsity = sparsity
        self.target = float(target)
        self.weight = float(weight)
        self.inner: ConvAutoencoder | DenseAutoencoder = (
            ConvAutoencoder(image_size, channels, latent_dim, width)
            if variant == "conv"
            else DenseAutoencoder(image_size, channels, hidden, latent_dim)
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid codes ``(N, latent_dim)`` of images ``(N, C, H, W)``."""
        if self.variant == "conv":
            return torch.sigmoid(self.inner.encode(x).flatten(1))
        return torch.sigmoid(self.inner.encode(x, activate=False))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` from codes ``(N, latent_dim)``."""
        if self.variant == "conv":
            return self.inner.decode(h[:, :, None, None])
        return self.inner.decode(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct images ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.decode(self.encode(x))

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reconstruction and the weighted sparsity penalty of the batch's codes."""
        h = self.encode(x)
        return self.decode(h), self.weight * sparsity_penalty(h, self.sparsity, self.target)
