"""The encoder + two-decoder network of USAD (Audibert et al., KDD 2020), for images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anomaly.models.conv_ae import build_decoder, build_encoder, check_size


class USADNet(nn.Module):
    """One convolutional encoder ``E`` and two decoders ``D1``, ``D2`` (Bergmann blocks).

    Args:
        image_size: Input ``(height, width)`` or one int; each divisible by 16.
        channels: Input channels.
        latent_dim: Size of the shared latent code.
        width: Multiplier on the hidden layers' channel counts.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 128,
        channels: int = 1,
        latent_dim: int = 100,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        size = check_size(image_size)
        self.encoder = build_encoder(size, channels, latent_dim, width)
        self.decoder1 = build_decoder(size, channels, latent_dim, width)
        self.decoder2 = build_decoder(size, channels, latent_dim, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(w1, w2, w3)`` = ``D1(E(x))``, ``D2(E(x))``, ``D2(E(D1(E(x))))``."""
        z = self.encoder(x)
        w1 = self.decoder1(z)
        return w1, self.decoder2(z), self.decoder2(self.encoder(w1))
