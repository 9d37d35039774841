"""The convolutional autoencoder of Bergmann et al. 2019, and its building blocks.

"Improving Unsupervised Defect Segmentation by Applying Structural Similarity to
Autoencoders" (VISAPP 2019), Table 1: strided 4x4 and 3x3 convolutions with LeakyReLU(0.2)
down to a latent code, a mirrored decoder of transposed convolutions, sigmoid output.
For a 128x128 input the encoder reaches 8x8 before a dense-like 8x8 convolution to the
latent code; other sizes keep the four stride-2 stages, so height and width must be
divisible by 16. The two-decoder adversarial model and the VAE reuse the same blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# (out_channels, kernel, stride) of the encoder body, as in the paper's Table 1.
_ENCODER = (
    (32, 4, 2),
    (32, 4, 2),
    (32, 3, 1),
    (64, 4, 2),
    (64, 3, 1),
    (128, 4, 2),
    (64, 3, 1),
    (32, 3, 1),
)


def _pad(kernel: int, stride: int) -> int:
    return 1 if (kernel, stride) in ((4, 2), (3, 1)) else 0


def check_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` of a conv model input; each must be divisible by 16.

    Raises:
        ValueError: A size not divisible by 16.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(s <= 0 or s % 16 for s in size):
        raise ValueError(f"conv models need height and width divisible by 16, got {tuple(size)}")
    return int(size[0]), int(size[1])


def _layers(width: float) -> list[tuple[int, int, int]]:
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return [(max(1, round(c * width)), k, s) for c, k, s in _ENCODER]


def build_encoder(
    size: tuple[int, int], channels: int, latent_channels: int, width: float = 1.0
) -> nn.Sequential:
    """Bergmann encoder: ``(N, channels, H, W)`` to ``(N, latent_channels, 1, 1)``."""
    if channels <= 0 or latent_channels <= 0:
        raise ValueError(
            f"channels and latent size must be positive, got {channels}, {latent_channels}"
        )
    modules: list[nn.Module] = []
    in_ch = channels
    for out_ch, k, s in _layers(width):
        modules += [nn.Conv2d(in_ch, out_ch, k, s, _pad(k, s)), nn.LeakyReLU(0.2)]
        in_ch = out_ch
    modules.append(nn.Conv2d(in_ch, latent_channels, (size[0] // 16, size[1] // 16)))
    return nn.Sequential(*modules)


def build_decoder(
    size: tuple[int, int], channels: int, latent_dim: int, width: float = 1.0
) -> nn.Sequential:
    """Mirrored Bergmann decoder: ``(N, latent_dim, 1, 1)`` to ``(N, channels, H, W)``."""
    layers = _layers(width)
    bottleneck = (size[0] // 16, size[1] // 16)
    modules: list[nn.Module] = [
        nn.ConvTranspose2d(latent_dim, layers[-1][0], bottleneck),
        nn.LeakyReLU(0.2),
    ]
    # Layer i of the decoder undoes encoder layer n-1-i and outputs that layer's input
    # channel count; the last one outputs the image through a sigmoid.
    inputs = [channels] + [c for c, _, _ in layers[:-1]]
    mirrored = list(zip(reversed(layers), reversed(inputs), strict=True))
    for i, ((out_ch, k, s), target) in enumerate(mirrored):
        conv = (nn.ConvTranspose2d if s == 2 else nn.Conv2d)(out_ch, target, k, s, _pad(k, s))
        modules += [conv, nn.Sigmoid() if i == len(mirrored) - 1 else nn.LeakyReLU(0.2)]
    return nn.Sequential(*modules)


class ConvAutoencoder(nn.Module):
    """Bergmann et al.'s convolutional autoencoder.

    Args:
        image_size: Input ``(height, width)`` or one int for a square; each divisible by 16.
        channels: Input channels (1 gray, 3 RGB).
        latent_dim: Size of the latent code (paper: 100). Too wide a code reconstructs
            defects too.
        width: Multiplier on every hidden layer's channel count (1.0 is the paper's).

    Raises:
        ValueError: A size not divisible by 16 or a non-positive parameter.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 128,
        channels: int = 1,
        latent_dim: int = 100,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        self.image_size = check_size(image_size)
        self.channels = channels
        self.latent_dim = latent_dim
        self.encoder = build_encoder(self.image_size, channels, latent_dim, width)
        self.decoder = build_decoder(self.image_size, channels, latent_dim, width)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent code ``(N, latent_dim, 1, 1)`` of images ``(N, C, H, W)``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(N, C, H, W)`` in ``[0, 1]`` of latent codes."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct images ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.decode(self.encode(x))
