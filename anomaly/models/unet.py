"""A small U-Net: the reconstruction network of inpainting-based detection (RIAD).

Skip connections let a U-Net copy its input, so on its own it would reconstruct defects
as well as anything else. It is meant to be trained and used on *masked* inputs (see
:mod:`anomaly.training.inpainting`): a hidden region has to be inferred from its
surroundings, and what the surroundings of normal parts predict is a normal surface.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder-decoder with skip connections and a sigmoid output in ``[0, 1]``.

    Args:
        channels: Input and output channels (1 gray, 3 RGB).
        base: Channels of the first level; each deeper level doubles them.
        depth: Number of 2x down-samplings; height and width must be divisible by
            ``2 ** depth``.
        image_size: Unused by the network (it is fully convolutional); accepted so that the
            model configs of every architecture look alike.

    Raises:
        ValueError: A non-positive parameter.
    """

    def __init__(
        self,
        channels: int = 1,
        base: int = 16,
        depth: int = 4,
        image_size: int | tuple[int, int] | list[int] | None = None,
    ) -> None:
        super().__init__()
        if channels <= 0 or base <= 0 or depth <= 0:
            raise ValueError(
                f"channels, base and depth must be positive, got {channels}, {base}, {depth}"
            )
        self.channels = channels
        self.depth = depth
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            [_block(channels, widths[0])] + [_block(widths[i], widths[i + 1]) for i in range(depth)]
        )
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth)]
        )
        self.merge = nn.ModuleList([_block(2 * widths[i], widths[i]) for i in range(depth)])
        self.out = nn.Conv2d(widths[0], channels, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``(N, C, H, W)`` inputs; H and W divisible by ``2 ** depth``."""
        factor = 2**self.depth
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"UNet of depth {self.depth} needs height and width divisible by {factor}, "
                f"got {tuple(x.shape[-2:])}"
            )
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else self.pool(h))
            skips.append(h)
        for i in reversed(range(self.depth)):
            h = self.merge[i](torch.cat([self.up[i](h), skips[i]], dim=1))
        return torch.sigmoid(self.out(h))
