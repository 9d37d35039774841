"""The convolutional autoencoder of Bergmann et al. 2019.

"Improving Unsupervised Defect Segmentation by Applying Structural Similarity to
Autoencoders" (VISAPP 2019), Table 1: strided 4x4 and 3x3 convolutions with LeakyReLU(0.2)
down to a latent code, a mirrored decoder of transposed convolutions, sigmoid output.
For a 128x128 input the encoder reaches 8x8 before a dense-like 8x8 convolution to the
latent code; other sizes keep the four stride-2 stages, so height and width must be
divisible by 16.
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


class ConvAutoencoder(nn.Module):
    """Bergmann et al.'s convolutional autoencoder.

    Args:
        image_size: Input ``(height, width)`` or one int for a square; each divisible by 16.
        channels: Input channels (1 gray, 3 RGB).
        latent_dim: Size of the latent code (paper: 100).
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
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or any(s <= 0 or s % 16 for s in size):
            raise ValueError(
                f"ConvAutoencoder needs height and width divisible by 16, got {tuple(size)}"
            )
        if channels <= 0 or latent_dim <= 0 or width <= 0:
            raise ValueError(
                f"channels, latent_dim and width must be positive, got "
                f"{channels}, {latent_dim}, {width}"
            )
        self.image_size = (int(size[0]), int(size[1]))
        self.channels = channels
        self.latent_dim = latent_dim
        bottleneck = (self.image_size[0] // 16, self.image_size[1] // 16)
        layers = [(max(1, round(c * width)), k, s) for c, k, s in _ENCODER]

        encoder: list[nn.Module] = []
        in_ch = channels
        for out_ch, k, s in layers:
            encoder += [nn.Conv2d(in_ch, out_ch, k, s, _pad(k, s)), nn.LeakyReLU(0.2)]
            in_ch = out_ch
        encoder.append(nn.Conv2d(in_ch, latent_dim, bottleneck))
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, in_ch, bottleneck),
            nn.LeakyReLU(0.2),
        ]
        # Mirror the encoder: layer i of the decoder undoes encoder layer n-1-i and outputs
        # that layer's input channel count.
        inputs = [channels] + [c for c, _, _ in layers[:-1]]
        mirrored = list(zip(reversed(layers), reversed(inputs), strict=True))
        for i, ((out_ch, k, s), target) in enumerate(mirrored):
            conv = (nn.ConvTranspose2d if s == 2 else nn.Conv2d)(out_ch, target, k, s, _pad(k, s))
            decoder += [conv, nn.Sigmoid() if i == len(mirrored) - 1 else nn.LeakyReLU(0.2)]
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent code ``(N, latent_dim, 1, 1)`` of images ``(N, C, H, W)``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(N, C, H, W)`` in ``[0, 1]`` of latent codes."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct images ``(N, C, H, W)`` in ``[0, 1]``."""
        return self.decode(self.encode(x))
