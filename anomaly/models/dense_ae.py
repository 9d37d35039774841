"""Fully connected autoencoders on flattened pixels: the classic baselines."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(s <= 0 for s in size):
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return int(size[0]), int(size[1])


class LinearAutoencoder(nn.Module):
    """Undercomplete linear autoencoder: ``x -> W_d (W_e x + b_e) + b_d``.

    With a squared-error loss its optimum spans the same subspace as PCA's top
    ``latent_dim`` components (Baldi & Hornik 1989): the PCA baseline, trained like the
    others. The output is not squashed, so it stays linear.

    Args:
        image_size: Input ``(height, width)`` or one int for a square.
        channels: Input channels.
        latent_dim: Number of components kept.
    """

    def __init__(
        self, image_size: int | Sequence[int] = 64, channels: int = 1, latent_dim: int = 32
    ) -> None:
        super().__init__()
        self.shape = (channels, *_size(image_size))
        features = channels * self.shape[1] * self.shape[2]
        if not 0 < latent_dim < features:
            raise ValueError(f"latent_dim must be in (0, {features}), got {latent_dim}")
        self.encoder = nn.Linear(features, latent_dim)
        self.decoder = nn.Linear(latent_dim, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct images ``(N, C, H, W)``."""
        return self.decoder(self.encoder(x.flatten(1))).view(x.shape[0], *self.shape)


class DenseAutoencoder(nn.Module):
    """Stacked fully connected autoencoder with a mirrored decoder and sigmoid output.

    Args:
        image_size: Input ``(height, width)`` or one int for a square.
        channels: Input channels.
        hidden: Widths of the encoder's hidden layers, e.g. ``[512, 128]``.
        latent_dim: Size of the code.
        activation: ``selu`` (self-normalising, no batch norm needed) or ``relu``.
        tied: Decoder layers reuse the transposed encoder weights (half the parameters).
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 64,
        channels: int = 1,
        hidden: Sequence[int] = (512, 128),
        latent_dim: int = 32,
        activation: str = "selu",
        tied: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ("selu", "relu"):
            raise ValueError(f"activation must be 'selu' or 'relu', got {activation!r}")
        self.shape = (channels, *_size(image_size))
        dims = [channels * self.shape[1] * self.shape[2], *hidden, latent_dim]
        if any(d <= 0 for d in dims):
            raise ValueError(f"layer widths must be positive, got {dims}")
        self.activation = F.selu if activation == "selu" else F.relu
        self.tied = tied
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        if tied:
            self.decoder_bias = nn.ParameterList(
                nn.Parameter(torch.zeros(d)) for d in reversed(dims[:-1])
            )
        else:
            back = list(reversed(dims))
            self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(back))

    def encode(self, x: torch.Tensor, *, activate: bool = True) -> torch.Tensor:
        """Codes ``(N, latent_dim)`` of images ``(N, C, H, W)``.

        Args:
            x: The images.
            activate: Apply the activation to the code layer too; False gives its raw
                output, for a model that squashes the code its own way (the sparse AE).
        """
        h = x.flatten(1)
        last = len(self.encoder) - 1
        for i, layer in enumerate(self.encoder):
            h = layer(h)
            if activate or i < last:
                h = self.activation(h)
        return h

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` in ``[0, 1]`` from codes ``(N, latent_dim)``."""
        n = len(self.encoder)
        for i in range(n):
            if self.tied:
                layer = self.encoder[n - 1 - i]
                h = F.linear(h, layer.weight.t(), self.decoder_bias[i])
            else:
                h = self.decoder[i](h)
            h = torch.sigmoid(h) if i == n - 1 else self.activation(h)
        return h.view(h.shape[0], *self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct images ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.decode(self.encode(x))
