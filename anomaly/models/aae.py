"""The adversarial autoencoder's networks (Makhzani, Shlens, Jaitly, Goodfellow & Frey 2015).

A convolutional encoder and decoder (Bergmann's blocks) and a small discriminator on the
code, which tells codes of images from samples of the prior. Training
(:mod:`anomaly.training.aae`) makes the encoder's codes follow the prior, so a normal
image's code is a likely one under it and the code's negative log-likelihood can count
in the image score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from anomaly.models.conv_ae import build_decoder, build_encoder, check_size


def gaussian_nll(z: torch.Tensor, std: float = 1.0) -> torch.Tensor:
    """Negative log-likelihood ``(N,)`` of codes ``(N, K)`` under ``N(0, std^2 I)``."""
    k = z.shape[1]
    return 0.5 * z.pow(2).sum(dim=1) / std**2 + 0.5 * k * math.log(2 * math.pi * std**2)


class AAENet(nn.Module):
    """Encoder, decoder and latent discriminator of the adversarial autoencoder.

    Args:
        image_size: Input ``(height, width)`` or one int; each divisible by 16.
        channels: Input channels.
        latent_dim: Code size.
        width: Multiplier on the encoder's and decoder's channel counts.
        discriminator_hidden: Widths of the discriminator's hidden layers.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 128,
        channels: int = 1,
        latent_dim: int = 16,
        width: float = 1.0,
        discriminator_hidden: Sequence[int] = (128, 128),
    ) -> None:
        super().__init__()
        size = check_size(image_size)
        self.latent_dim = latent_dim
        self.encoder = build_encoder(size, channels, latent_dim, width)
        # Codes start at the prior's scale: a code squeezed into a small spot of the prior
        # (the encoder's first outputs are tiny) is moved around as a whole by the
        # discriminator's gradient, never spread over the prior.
        self.code_norm = nn.BatchNorm1d(latent_dim)
        self.decoder = build_decoder(size, channels, latent_dim, width)
        layers: list[nn.Module] = []
        width_in = latent_dim
        for hidden in discriminator_hidden:
            layers += [nn.Linear(width_in, hidden), nn.LeakyReLU(0.2)]
            width_in = hidden
        # Logits: the losses apply the sigmoid (binary cross-entropy with logits).
        layers.append(nn.Linear(width_in, 1))
        self.discriminator = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``(N, latent_dim)`` of images ``(N, C, H, W)``."""
        return self.code_norm(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` in ``[0, 1]`` from codes ``(N, latent_dim)``."""
        return self.decoder(z[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct images ``(N, C, H, W)``."""
        return self.decode(self.encode(x))
