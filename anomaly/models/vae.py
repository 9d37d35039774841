"""A convolutional variational autoencoder on the Bergmann encoder and decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anomaly.models.conv_ae import build_decoder, build_encoder, check_size


class ConvVAE(nn.Module):
    """Convolutional VAE (Kingma & Welling 2014) with a gaussian latent code.

    The encoder outputs the mean and log-variance of ``q(z|x)``; training decodes a sample
    drawn with the reparameterisation trick and adds ``kl_weight`` times the KL divergence
    to the prior. Scoring reconstructs from the latent *mean*, so maps are deterministic.

    Args:
        image_size: Input ``(height, width)`` or one int; each divisible by 16.
        channels: Input channels.
        latent_dim: Size of the latent code.
        width: Multiplier on the hidden layers' channel counts.
        kl_weight: Weight of the KL term (1.0 is the ELBO; smaller favours reconstruction).
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 128,
        channels: int = 1,
        latent_dim: int = 100,
        width: float = 1.0,
        kl_weight: float = 1e-3,
    ) -> None:
        super().__init__()
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight!r}")
        size = check_size(image_size)
        self.kl_weight = kl_weight
        self.encoder = build_encoder(size, channels, 2 * latent_dim, width)
        self.decoder = build_decoder(size, channels, latent_dim, width)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance ``(N, latent_dim, 1, 1)`` of ``q(z|x)``."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of the latent mean: the deterministic map used for scoring."""
        return self.decoder(self.encode(x)[0])

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A sampled reconstruction and the weighted KL term (mean over the batch)."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=(1, 2, 3)).mean()
        # Per pixel, like the reconstruction losses, so kl_weight means the same at any size.
        return self.decoder(z), self.kl_weight * kl / x[0].numel()
