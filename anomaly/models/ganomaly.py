"""GANomaly's networks (Akcay, Atapour-Abarghouei & Breckon, ACCV 2018), CPU-sized.

DCGAN-style blocks: an encoder ``GE`` (strided 4x4 convolutions with batch norm and
LeakyReLU, four halvings, then one convolution over the remaining grid to the code
``z``), a decoder ``GD`` that mirrors it with transposed convolutions, a second encoder
``E`` that codes the reconstruction (``z_hat = E(GD(GE(x)))``), and a discriminator of
the encoder's shape whose last grid of features serves the feature-matching loss. Input
height and width must be divisible by 16. anomalib's GANomaly at 256x256 has 189 M
parameters; here ``base`` channels (16 by default) keep all four networks near 3 M
at 128x128.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anomaly.models.conv_ae import check_size

# Halvings from the image to the last grid, each doubling the channels.
_DEPTH = 4


def dcgan_body(channels: int, base: int) -> nn.Sequential:
    """Four strided 4x4 convolutions: ``(N, channels, H, W)`` to ``(N, 8 base, H/16, W/16)``."""
    layers: list[nn.Module] = []
    c_in = channels
    for i in range(_DEPTH):
        c_out = base * 2**i
        layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False))
        # The DCGAN design: no batch norm on the first layer.
        if i > 0:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2))
        c_in = c_out
    return nn.Sequential(*layers)


def dcgan_encoder(size: tuple[int, int], channels: int, out: int, base: int) -> nn.Sequential:
    """The body, then one convolution over its ``H/16 x W/16`` grid: ``(N, out, 1, 1)``."""
    grid = (size[0] // 2**_DEPTH, size[1] // 2**_DEPTH)
    return nn.Sequential(
        dcgan_body(channels, base), nn.Conv2d(base * 2 ** (_DEPTH - 1), out, grid, bias=False)
    )


def dcgan_decoder(size: tuple[int, int], channels: int, latent: int, base: int) -> nn.Sequential:
    """The mirror of :func:`dcgan_encoder`: ``(N, latent, 1, 1)`` to images in ``[0, 1]``."""
    grid = (size[0] // 2**_DEPTH, size[1] // 2**_DEPTH)
    c = base * 2 ** (_DEPTH - 1)
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(latent, c, grid, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
    ]
    for _ in range(_DEPTH - 1):
        layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2)]
        layers.append(nn.ReLU())
        c //= 2
    # Sigmoid, not the paper's tanh: images here lie in [0, 1].
    layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1, bias=False), nn.Sigmoid()]
    return nn.Sequential(*layers)


class Discriminator(nn.Module):
    """The encoder's body and a one-logit head; :meth:`features` for feature matching."""

    def __init__(self, size: tuple[int, int], channels: int, base: int) -> None:
        super().__init__()
        grid = (size[0] // 2**_DEPTH, size[1] // 2**_DEPTH)
        self.body = dcgan_body(channels, base)
        self.head = nn.Conv2d(base * 2 ** (_DEPTH - 1), 1, grid, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last grid of features ``(N, 8 base, H/16, W/16)``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real-vs-reconstructed logits ``(N,)``."""
        return self.head(self.features(x)).flatten()


class GANomalyNet(nn.Module):
    """Generator (encoder ``GE``, decoder ``GD``, encoder ``E``) and discriminator.

    Args:
        image_size: Input ``(height, width)`` or one int; each divisible by 16.
        channels: Input channels.
        latent_dim: Size of the codes ``z`` and ``z_hat`` (paper: 100).
        base: Channels of the first convolution; each halving doubles them.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 128,
        channels: int = 1,
        latent_dim: int = 100,
        base: int = 16,
    ) -> None:
        super().__init__()
        if base < 1 or latent_dim < 1:
            raise ValueError(f"base and latent_dim must be >= 1, got {base}, {latent_dim}")
        size = check_size(image_size)
        self.encoder1 = dcgan_encoder(size, channels, latent_dim, base)
        self.decoder = dcgan_decoder(size, channels, latent_dim, base)
        self.encoder2 = dcgan_encoder(size, channels, latent_dim, base)
        self.discriminator = Discriminator(size, channels, base)

    def generate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_hat, z, z_hat)``: the reconstruction and both codes ``(N, latent_dim)``."""
        z = self.encoder1(x)
        x_hat = self.decoder(z)
        return x_hat, z.flatten(1), self.encoder2(x_hat).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``GD(GE(x))``."""
        return self.decoder(self.encoder1(x))

    def generator_parameters(self) -> list[nn.Parameter]:
        """The parameters of ``GE``, ``GD`` and ``E``: the generator phase's."""
        return [p for m in (self.encoder1, self.decoder, self.encoder2) for p in m.parameters()]


def latent_score(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """GANomaly's image score ``(N,)``: the mean squared distance of the two codes."""
    return (z - z_hat).pow(2).mean(dim=1)
